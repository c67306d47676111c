"""The ``footprint`` section of ``tox -e bench``: one API worker's cost.

Each configuration runs in a fresh process (``python bench_footprint.py
--child ...``), so that nothing else in the process distorts it: an
Enforcer on the service's policy file (native oslo.policy) or on the
delegation file with the embedded driver, the service's defaults
registered as a service registers them.  It reports:

* RSS added (``/proc/self/status`` VmRSS) from before the Enforcer is
  made to after one decision per rule for each of three ordinary callers
  (a project member, a project reader, a system reader);
* start-up: from ``Enforcer.load_rules()`` to the first decision;
* a first pass over every rule, three callers each.

Targets (issue 13): neutron adds at most 40 MiB over native; start-up
at most 0.3 s for neutron; a first pass at most 2x native's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CORPUS = os.path.join(ROOT, 'tests', 'fixtures', 'corpus')
TARGETS = {'memory_mib': 40.0, 'startup_s': 0.3, 'pass_ratio': 2.0}


def _rss_kib() -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    raise RuntimeError('no VmRSS')


def _callers():
    from oslo_context import context

    return [
        context.RequestContext(
            user_id='u1', project_id='p1', roles=['member', 'reader']
        ),
        context.RequestContext(
            user_id='u2', project_id='p2', roles=['reader']
        ),
        context.RequestContext(
            user_id='u3', roles=['reader'], system_scope='all'
        ),
    ]


def child(kind: str, service: str, rego_path: str) -> dict:
    """Measure one configuration in this (fresh) process."""
    import logging
    import warnings

    sys.path.insert(0, ROOT)
    from oslo_config import cfg
    from oslo_policy import policy as oslo_policy

    from oslo_opa import opts
    from tests import corpus

    logging.getLogger('oslo_policy').setLevel(logging.ERROR)
    warnings.simplefilter('ignore')
    defaults = corpus.defaults(service)
    with open(os.path.join(rego_path, 'manifest.json')) as f:
        rules = list(json.load(f)['rules'])
    callers = _callers()
    target = {'project_id': 'p1', 'target.project.id': 'p1'}
    rss0 = _rss_kib()
    conf = cfg.ConfigOpts()
    conf(args=[], default_config_files=[])
    if kind == 'native':
        policy_file = os.path.join(CORPUS, f'{service}.policy.yaml')
    else:
        policy_file = os.path.join(rego_path, 'policy.yaml')
        opts.register_opts(conf)
        conf.set_override('rego_path', rego_path, 'oslo_opa')
        conf.set_override('cache_size', 0, 'oslo_opa')
    enforcer = oslo_policy.Enforcer(conf, policy_file=policy_file)
    conf.set_override('policy_dirs', [], 'oslo_policy')
    enforcer.suppress_deprecation_warnings = True
    enforcer.suppress_default_change_warnings = True
    enforcer.register_defaults(defaults)
    start = time.perf_counter()
    enforcer.load_rules()
    enforcer.enforce(rules[0], target, callers[0])
    first = time.perf_counter() - start
    start = time.perf_counter()
    for rule in rules:
        for creds in callers:
            enforcer.enforce(rule, target, creds)
    whole = time.perf_counter() - start
    return {
        'rss_added_mib': (_rss_kib() - rss0) / 1024,
        'startup_s': first,
        'pass_s': whole,
        'rules': len(rules),
    }


def bench_footprint(workdir: str, services: list[str]) -> None:
    sys.path.insert(0, ROOT)
    from oslo_opa.convert import convert

    print(
        '== footprint: one worker process per configuration (RSS added '
        'after a decision per rule for 3 callers; start-up from '
        'load_rules() to the first decision; a first pass over every rule)'
    )
    print(
        f'{"service":<9} {"rules":>5} {"":<9} {"RSS added":>10} '
        f'{"start-up":>9} {"first pass":>10}'
    )
    for service in services:
        out = os.path.join(workdir, f'footprint-{service}')
        convert(
            out,
            policy_files=[os.path.join(CORPUS, f'{service}.policy.yaml')],
            tests=False,
        )
        found = {}
        for kind in ('native', 'embedded'):
            proc = subprocess.run(
                [sys.executable, __file__, '--child', kind, service, out],
                capture_output=True,
                text=True,
                check=True,
                cwd=ROOT,
            )
            found[kind] = json.loads(proc.stdout.strip().splitlines()[-1])
        for kind, m in found.items():
            print(
                f'{service:<9} {m["rules"]:>5} {kind:<9} '
                f'{m["rss_added_mib"]:>7.1f}MiB {m["startup_s"]:>8.3f}s '
                f'{m["pass_s"]:>9.3f}s'
            )
        native, embedded = found['native'], found['embedded']
        over = embedded['rss_added_mib'] - native['rss_added_mib']
        ratio = embedded['pass_s'] / native['pass_s']
        print(
            f'{service:<9} embedded over native: {over:+.1f} MiB '
            f'(target <= {TARGETS["memory_mib"]:.0f}), start-up '
            f'{embedded["startup_s"]:.3f}s (target <= '
            f'{TARGETS["startup_s"]}s), first pass {ratio:.2f}x native '
            f'(target <= {TARGETS["pass_ratio"]:.0f}x)'
        )


if __name__ == '__main__':
    if len(sys.argv) == 5 and sys.argv[1] == '--child':
        print(json.dumps(child(*sys.argv[2:5])))
    else:
        import tempfile

        with tempfile.TemporaryDirectory() as work:
            bench_footprint(
                work, sys.argv[1:] or ['keystone', 'nova', 'neutron']
            )
