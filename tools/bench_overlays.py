"""The ``overlay`` section of ``tox -e bench``: what overlays cost.

One Enforcer on the original policy (native oslo.policy, the baseline)
and Enforcers delegating to the embedded driver with no overlay, with a
``deny["*"]`` for a "suspended" role (every rule can then be changed:
each decision first asks the overlays), and with that plus a grant on
the rule most others read, for one break-glass user.  The same realistic
requests (bench.py's mix; no caller is suspended, so the overlays only
have to be asked) are decided by each, interleaved, decision cache off.
Then the break-glass user's requests alone, where the grant on a rule
they read sends the decision to the rule's bundle with the overlays
compiled in.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import random
import time
import warnings

SUSPENDED = """package oslo_opa.overlay

deny["*"] contains "suspended users can do nothing" if {
\tsome role in input.credentials.roles
\tis_string(role)
\tlower(role) == "suspended"
}
"""
BREAK_GLASS = """
grant["%s"] contains "break glass" if {
\tinput.credentials.user_id == "break-glass"
}
"""


def _most_read(rules: list) -> str:
    counts = collections.Counter(
        dep for _name, entry in rules for dep in entry['deps']
    )
    return counts.most_common(1)[0][0]


def bench_overlays(workdir: str, services: list[str], count: int) -> None:
    import bench
    from oslo_context import context

    from oslo_opa import check
    from oslo_opa.convert import convert
    from tests import corpus

    logging.getLogger('oslo_policy').setLevel(logging.ERROR)
    warnings.simplefilter('ignore')
    print(
        '== overlay: what overlays cost the embedded driver '
        f'({count} requests per run, interleaved, no decision cache)'
    )
    print(
        f'{"service":<9} {"overlays":<22} {"p50":>7} {"p99":>7} '
        f'{"p50 / native":>12} {"p50 / none":>10}'
    )
    for svc in services:
        out = os.path.join(workdir, f'overlay-{svc}')
        policy_file = os.path.join(bench.CORPUS, f'{svc}.policy.yaml')
        convert(out, policy_files=[policy_file], tests=False)
        with open(os.path.join(out, 'manifest.json')) as f:
            rules = sorted(json.load(f)['rules'].items())
        base = _most_read(rules)
        variants = {
            'star': SUSPENDED,
            'star + break glass': SUSPENDED + BREAK_GLASS % base,
        }
        paths = {}
        for name, text in variants.items():
            directory = os.path.join(workdir, f'overlay-{svc}-{len(paths)}')
            os.makedirs(directory)
            with open(os.path.join(directory, 'o.rego'), 'w') as f:
                f.write(text)
            paths[name] = directory
        defaults = corpus.defaults(svc)
        check.reset()
        enforcers = {'native': bench._enforcer(policy_file, defaults)}
        delegation = os.path.join(out, 'policy.yaml')
        enforcers['none'] = bench._enforcer(delegation, defaults, out)
        for name, directory in paths.items():
            enf = bench._enforcer(delegation, defaults, out)
            enf.conf.set_override('overlay_path', [directory], 'oslo_opa')
            enforcers[name] = enf
        rng = random.Random(5)
        users = bench._users(rng)
        requests = bench._requests(rules, users, rng, count)
        glass = context.RequestContext(
            user_id='break-glass', project_id='p0', roles=['reader']
        )
        readers = [r for r in rules if base in r[1]['deps']]
        glass_requests = [
            (name, target, glass)
            for name, target, _ in bench._requests(readers, users, rng, count)
        ]
        times = _interleaved(enforcers, requests)
        native50 = bench._percentiles(times['native'])[0]
        none50 = bench._percentiles(times['none'])[0]
        for name, samples in times.items():
            p50, p99 = bench._percentiles(samples)
            print(
                f'{svc:<9} {name:<22} {p50 * 1e6:>5.0f}us {p99 * 1e6:>5.0f}us '
                f'{p50 / native50:>12.2f} {p50 / none50:>10.2f}'
            )
        glass_times = _interleaved(
            {
                'native': enforcers['native'],
                'star + break glass': enforcers['star + break glass'],
            },
            glass_requests,
        )
        n50 = bench._percentiles(glass_times['native'])[0]
        g50, g99 = bench._percentiles(glass_times['star + break glass'])
        print(
            f'{svc:<9} {"break-glass user":<22} {g50 * 1e6:>5.0f}us '
            f'{g99 * 1e6:>5.0f}us {g50 / n50:>12.2f} '
            f'(grant on {base}, read by {len(readers)} rules)'
        )


def _interleaved(enforcers: dict, requests: list) -> dict[str, list[float]]:
    """Each request decided by each enforcer in turn (a rotating order),
    after a warm-up that compiles what the requests need."""
    for enf in enforcers.values():
        for name, target, user in requests[: min(len(requests), 600)]:
            enf.enforce(name, target, user)
    names = list(enforcers)
    times: dict[str, list[float]] = {n: [] for n in names}
    clock = time.perf_counter
    for i, (rule, target, user) in enumerate(requests):
        order = names[i % len(names) :] + names[: i % len(names)]
        answers = set()
        for name in order:
            start = clock()
            answers.add(bool(enforcers[name].enforce(rule, target, user)))
            times[name].append(clock() - start)
    return times
