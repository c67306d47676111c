"""The embedded driver in an eventlet-monkey-patched process.

Many OpenStack services still run under eventlet; the interpreter pool
must hand each greenthread its own interpreter.  Runs in a subprocess,
since monkey-patching is process-wide.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from oslo_opa.convert import convert
from tests import corpus

pytest.importorskip('eventlet')

SCRIPT = textwrap.dedent(
    """
    import json, random, sys, warnings
    warnings.simplefilter('ignore')
    import eventlet
    eventlet.monkey_patch()
    from oslo_opa import decider

    out = sys.argv[1]
    rng = random.Random(3)
    rules = ['admin_required', 'identity:get_project', 'identity:get_user',
             'identity:list_projects', 'identity:create_project']
    requests = []
    for i in range(1500):
        creds = {'roles': rng.choice([['admin'], ['reader'], ['Member']]),
                 'project_id': rng.choice(['p1', 'p2']),
                 'user_id': rng.choice(['u1', 'u2'])}
        target = {'target.project.id': rng.choice(['p1', 'p2']),
                  'target.user.id': rng.choice(['u1', 'u2'])}
        requests.append((rng.choice(rules), target, creds))
    d = decider.load(out, cache_size=0)
    serial = [d.decide(r, t, c) for r, t, c in requests]
    pool = eventlet.GreenPool(64)
    green = list(pool.imap(lambda req: d.decide(*req), requests))
    print(json.dumps({'serial': serial, 'green': green}))
    """
)


def _run(script, *args):
    """script's last line of output, as JSON, from a fresh process."""
    proc = subprocess.run(
        [sys.executable, '-c', script, *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        env={**os.environ, 'PYTHONWARNINGS': 'ignore'},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_greenthreads_decide_like_one_thread(tmp_path):
    out = str(tmp_path / 'opa')
    convert(out, policy_files=[corpus.policy_file('keystone')])
    result = _run(SCRIPT, out)
    assert len(result['green']) == 1500
    assert result['green'] == result['serial']
    # Both decisions occurred, so equal lists say something.
    assert 0 < sum(result['serial']) < 1500


ROLLOUT_SCRIPT = textwrap.dedent(
    """
    import json, sys, warnings
    warnings.simplefilter('ignore')
    import eventlet
    eventlet.monkey_patch()
    from oslo_config import cfg
    from oslo_policy import policy as oslo_policy
    from oslo_opa import check, opts

    out, log, original = sys.argv[1], sys.argv[2], sys.argv[3]
    native_conf = cfg.ConfigOpts()
    native_conf(args=[], default_config_files=[])
    native = oslo_policy.Enforcer(native_conf, policy_file=original)
    conf = cfg.ConfigOpts()
    conf(args=[], default_config_files=[])
    enf = oslo_policy.Enforcer(conf, policy_file=out + '/policy.yaml')
    opts.register_opts(conf)
    conf.set_override('rego_path', out, 'oslo_opa')
    conf.set_override('mode', 'shadow', 'oslo_opa')
    conf.set_override('decision_log_file', log, 'oslo_opa')
    creds = [{'roles': ['admin']}, {'roles': ['reader'], 'project_id': 'p1'}]
    requests = [
        (rule, {'target.project.id': 'p1'}, creds[i % 2])
        for i, rule in enumerate(['identity:get_project',
                                  'identity:create_project'] * 100)
    ]
    pool = eventlet.GreenPool(32)
    got = list(pool.imap(lambda r: bool(enf.enforce(*r)), requests))
    want = [bool(native.enforce(*r)) for r in requests]
    d = check.decider_for(conf)
    flushed = d.shadow.flush(60) and d.log.flush(60)
    print(json.dumps({'got': got, 'want': want, 'flushed': flushed,
                      'compared': d.shadow.compared,
                      'mismatches': sum(d.shadow.mismatches.values())}))
    """
)


def test_shadow_mode_and_decision_logs_under_eventlet(tmp_path):
    """The background threads are greenthreads there: comparisons and
    events still happen, and the decisions are oslo.policy's."""
    out = str(tmp_path / 'opa')
    log = str(tmp_path / 'decisions.log')
    convert(out, policy_files=[corpus.policy_file('keystone')])
    result = _run(ROLLOUT_SCRIPT, out, log, corpus.policy_file('keystone'))
    assert result['flushed']
    assert result['compared'] == 200 and result['mismatches'] == 0
    # The service got oslo.policy's own decisions, both kinds.
    assert result['got'] == result['want']
    assert True in result['got'] and False in result['got']
    with open(log) as f:
        events = [json.loads(line) for line in f]
    assert len(events) == 200
    assert {e['oslo_opa']['mode'] for e in events} == {'shadow'}
