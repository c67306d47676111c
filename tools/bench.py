#!/usr/bin/env python3
"""Benchmarks for oslo.opa (``tox -e bench``).

Numbers are reported, never asserted: speed is judged as ratios against
a baseline measured in the same process and run.

Sections (all by default, or name them):

``convert``
    Time to convert every service of the corpus (the effective rule table
    through a real Enforcer, then Rego) and, as the baseline, the time
    oslo.policy itself takes to load and parse the same policy file.
``load``
    Time to compile each service's converted output in regopy (one
    bundle per rule, every rule), per rule and in all.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from oslo_config import cfg  # noqa: E402
from oslo_policy import policy as oslo_policy  # noqa: E402

from oslo_opa.convert import convert  # noqa: E402
from oslo_opa.engine import RegoPolicy  # noqa: E402

CORPUS = os.path.join(os.path.dirname(HERE), 'tests', 'fixtures', 'corpus')
SERVICES = sorted(
    f.split('.')[0] for f in os.listdir(CORPUS) if f.endswith('.policy.yaml')
)


def _oslo_load(path: str) -> None:
    conf = cfg.ConfigOpts()
    conf([])
    enforcer = oslo_policy.Enforcer(conf, policy_file=path)
    conf.set_override('policy_dirs', [], 'oslo_policy')
    enforcer.load_rules()


def _best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_convert(workdir: str, repeat: int) -> dict[str, str]:
    print('== convert: corpus policy.yaml -> Rego (best of %d)' % repeat)
    print(
        f'{"service":<10} {"rules":>5} {"convert ms":>11} '
        f'{"oslo load ms":>13} {"ratio":>6}'
    )
    outputs = {}
    total_conv = total_base = 0.0
    rules = 0
    for svc in SERVICES:
        path = os.path.join(CORPUS, f'{svc}.policy.yaml')
        out = os.path.join(workdir, svc)
        conv_t = _best_of(
            lambda path=path, out=out: convert(out, policy_files=[path]),
            repeat,
        )
        base_t = _best_of(lambda path=path: _oslo_load(path), repeat)
        n = len(RegoPolicy(out).manifest.rules)
        outputs[svc] = out
        rules += n
        total_conv += conv_t
        total_base += base_t
        print(
            f'{svc:<10} {n:>5} {conv_t * 1e3:>11.1f} {base_t * 1e3:>13.1f} '
            f'{conv_t / base_t:>6.1f}'
        )
    print(
        f'{"all":<10} {rules:>5} {total_conv * 1e3:>11.1f} '
        f'{total_base * 1e3:>13.1f} {total_conv / total_base:>6.1f}'
    )
    return outputs


def bench_load(outputs: dict[str, str]) -> None:
    print('== load: compile every rule of a converted service in regopy')
    print(
        f'{"service":<10} {"rules":>5} {"total ms":>9} {"p50 ms":>7} '
        f'{"max ms":>7}'
    )
    grand = 0.0
    for svc, out in outputs.items():
        policy = RegoPolicy(out)
        per_rule = []
        for rule in policy.manifest.rules:
            start = time.perf_counter()
            policy.bundle(rule)
            per_rule.append(time.perf_counter() - start)
        total = sum(per_rule)
        grand += total
        print(
            f'{svc:<10} {len(per_rule):>5} {total * 1e3:>9.0f} '
            f'{statistics.median(per_rule) * 1e3:>7.1f} '
            f'{max(per_rule) * 1e3:>7.1f}'
        )
    print(f'{"all":<10} {"":>5} {grand * 1e3:>9.0f}')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        'sections',
        nargs='*',
        metavar='SECTION',
        help='convert, load (default: all)',
    )
    parser.add_argument('--repeat', type=int, default=3)
    args = parser.parse_args(argv)
    sections = args.sections or ['convert', 'load']
    unknown = set(sections) - {'convert', 'load'}
    if unknown:
        parser.error(f'unknown section(s): {", ".join(sorted(unknown))}')
    with tempfile.TemporaryDirectory(prefix='oslo-opa-bench-') as work:
        outputs = bench_convert(work, args.repeat)
        if 'load' in sections:
            bench_load(outputs)
    return 0


if __name__ == '__main__':
    sys.exit(main())
