"""``tox -e bench -- metrics``: what recording a decision costs.

A decision as the Decider makes it (keystone, embedded driver) alone,
against the same decision timed and recorded (``perf_counter`` twice and
``metrics.decision``) with metrics off and on, interleaved, best of
several rounds; with the cache off (a full evaluation) and on (a hit,
the cheapest decision, where recording weighs most).  Then
``metrics.decision`` alone, in one process and in prometheus_client's
multiprocess mode (a fresh process: the mode is chosen at import).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(os.path.dirname(HERE), 'tests', 'fixtures', 'corpus')


def raw_cost(count: int) -> float:
    """Microseconds per metrics.decision, metrics on, best of 5."""
    from oslo_opa import metrics

    metrics.configure('registry')
    args = [
        (f'identity:rule_{i % 20}', i % 2 == 0, 'embedded', 'fast', 2e-5)
        for i in range(count)
    ]
    record = metrics.decision
    best = float('inf')
    for _ in range(7):
        start = time.perf_counter()
        for a in args:
            record(*a)
        best = min(best, time.perf_counter() - start)
    return best / count * 1e6


def _timed(fn, items, rounds: int) -> float:
    best = float('inf')
    for _ in range(rounds):
        start = time.perf_counter()
        fn(items)
        best = min(best, time.perf_counter() - start)
    return best / len(items) * 1e6


def bench_metrics(workdir: str, count: int) -> None:
    from oslo_opa import decider, metrics
    from oslo_opa.convert import convert

    print('== metrics: a decision recorded against not (us per decision)')
    out = os.path.join(workdir, 'metrics-keystone')
    convert(out, policy_files=[os.path.join(CORPUS, 'keystone.policy.yaml')])
    creds = {'roles': ['reader'], 'project_id': 'p1', 'user_id': 'u1'}
    rules = ['identity:get_project', 'identity:list_projects']
    items = [
        (rules[i % 2], {'target.project.id': f'p{i % 2}'}, creds)
        for i in range(max(count // 4, 100))
    ]
    perf = time.perf_counter
    for label, cache in (('cache off', 0), ('cache hit', 4096)):
        d = decider.load(out, cache_size=cache)

        def bare(batch, d=d):
            for rule, target, c in batch:
                d.decide(rule, target, c)

        def recorded(batch, d=d):
            for rule, target, c in batch:
                start = perf()
                allowed = d.decide(rule, target, c)
                metrics.decision(
                    rule, allowed, 'embedded', 'full', perf() - start
                )

        bare(items)  # compile, fill the cache
        times: dict[str, float] = {'bare': 1e9, 'off': 1e9, 'on': 1e9}
        for _ in range(3):
            metrics.configure('off')
            times['bare'] = min(times['bare'], _timed(bare, items, 3))
            times['off'] = min(times['off'], _timed(recorded, items, 3))
            metrics.configure('registry')
            times['on'] = min(times['on'], _timed(recorded, items, 3))
        metrics.configure('off')
        d.close()
        print(
            f'{label:<10} bare {times["bare"]:6.2f}  off {times["off"]:6.2f} '
            f'({times["off"] / times["bare"]:.2f}x)  on {times["on"]:6.2f} '
            f'({times["on"] / times["bare"]:.2f}x, '
            f'+{times["on"] - times["bare"]:.2f} us)'
        )
    print(f'metrics.decision alone, on: {raw_cost(count):.2f} us')
    with tempfile.TemporaryDirectory() as prom:
        env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=prom)
        code = f'import bench_metrics; print(bench_metrics.raw_cost({count}))'
        run = subprocess.run(
            [sys.executable, '-c', code],
            cwd=HERE,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        print(
            'metrics.decision alone, on, multiprocess mode: '
            f'{float(run.stdout):.2f} us'
        )
