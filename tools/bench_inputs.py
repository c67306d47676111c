"""The ``inputs`` section of ``tox -e bench``: no slow inputs.

For each service, every rule is asked about the inputs the corpus
differential tests generate (``probe.InputGenerator``, the same seed),
by an Enforcer on the original policy (native oslo.policy, the baseline)
and by one delegating to the embedded driver, interleaved, decision
cache off.  Each input falls in one class, by what makes it unusual:

``tidy``
    what the fast path decides (roles a list of strings, other
    credentials scalars, a list of one string, or empty lists);
``roles not strings``
    ``roles`` missing its list shape: None, a number, a dict, a string,
    or a list holding a non-string;
``credential list``
    a credential other than roles is a list of several items;
``nested credential``
    a credential holds a dict, or a list of dicts, on a dotted path;
``odd strings``
    tidy, but a string is not ASCII, holds a quote, backslash or
    newline, or prints like another type (``"True"``, ``"1"``).

Per class: p50 native, p50 embedded, their ratio (target <= 2x), and
the worst per-rule ratio of p50s among rules with enough samples.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import time
import warnings

CLASSES = (
    'tidy',
    'roles not strings',
    'credential list',
    'nested credential',
    'odd strings',
)


def input_class(creds: dict, target: dict) -> str:
    """The class of one generated (creds, target) pair."""
    roles = creds.get('roles', [])
    if not isinstance(roles, list) or any(
        not isinstance(r, str) for r in roles
    ):
        return 'roles not strings'
    nested = listed = False
    for key, value in creds.items():
        if key == 'roles':
            continue
        if isinstance(value, dict) or (
            isinstance(value, list) and any(isinstance(v, dict) for v in value)
        ):
            nested = True
        elif isinstance(value, list) and (
            len(value) > 1 or any(not isinstance(v, str) for v in value)
        ):
            listed = True
    if nested:
        return 'nested credential'
    if listed:
        return 'credential list'
    for value in [*roles, *creds.values(), *target.values()]:
        if isinstance(value, str) and (
            not value.isascii()
            or any(c in value for c in '"\\\n')
            or value in ('True', 'False', 'None')
            or value.lstrip('-').isdigit()
        ):
            return 'odd strings'
    return 'tidy'


def _p50(samples: list[float]) -> float:
    samples = sorted(samples)
    return samples[len(samples) // 2]


def bench_inputs(workdir: str, services: list[str], per_rule: int) -> None:
    import bench

    from oslo_opa import check, probe
    from oslo_opa.convert import convert
    from tests import corpus, differential

    logging.getLogger('oslo_policy').setLevel(logging.ERROR)
    warnings.simplefilter('ignore')
    print(
        '== inputs: native oslo.policy vs the embedded driver, by input '
        f'class ({per_rule} generated inputs per rule, interleaved, '
        'no decision cache)'
    )
    print(
        f'{"service":<9} {"class":<19} {"inputs":>6} {"native p50":>10} '
        f'{"opa p50":>8} {"ratio":>6} {"worst rule":>10}  (target <= 2x)'
    )
    for svc in services:
        out = os.path.join(workdir, f'inputs-{svc}')
        policy_file = os.path.join(bench.CORPUS, f'{svc}.policy.yaml')
        convert(out, policy_files=[policy_file], tests=False)
        with open(os.path.join(out, 'manifest.json')) as f:
            names = sorted(json.load(f)['rules'])
        defaults = corpus.defaults(svc)
        native = bench._enforcer(policy_file, defaults)
        check.reset()
        delegated = bench._enforcer(
            os.path.join(out, 'policy.yaml'), defaults, out, 0
        )
        times = collections.defaultdict(lambda: ([], []))
        by_rule = collections.defaultdict(lambda: ([], []))
        disagree = 0
        clock = time.perf_counter
        for name in names:
            leaves = probe.collect(native.rules, name, native.default_rule)
            cases = probe.InputGenerator(leaves, seed=name).inputs(per_rule)
            for creds, target in cases:  # warm: compile what it needs
                differential.oslo_decision(delegated, name, creds, target)
            for i, (creds, target) in enumerate(cases):
                kind = input_class(creds, target)
                pair = [(native, 0), (delegated, 1)]
                if i % 2:
                    pair.reverse()
                answers = [None, None]
                spent = [0.0, 0.0]
                for enf, side in pair:
                    best = None
                    for _ in range(3):
                        start = clock()
                        answer = differential.oslo_decision(
                            enf, name, creds, target
                        )
                        took = clock() - start
                        best = took if best is None else min(best, took)
                    answers[side] = answer
                    spent[side] = best
                disagree += answers[0] != answers[1]
                for side in (0, 1):
                    times[kind][side].append(spent[side])
                    by_rule[kind, name][side].append(spent[side])
        for kind in CLASSES:
            nat, opa = times.get(kind, ([], []))
            if not nat:
                continue
            worst = max(
                (
                    _p50(o) / _p50(n)
                    for (k, _r), (n, o) in by_rule.items()
                    if k == kind and len(n) >= 5
                ),
                default=float('nan'),
            )
            print(
                f'{svc:<9} {kind:<19} {len(nat):>6} '
                f'{_p50(nat) * 1e6:>8.0f}us {_p50(opa) * 1e6:>6.0f}us '
                f'{_p50(opa) / _p50(nat):>6.2f} {worst:>9.2f}x'
            )
        if disagree:
            print(f'{svc:<9} DISAGREED on {disagree} inputs')
