"""The ``batch`` section of ``tox -e bench``: decide_many against decide.

1,000 decisions of one rule (neutron's ``get_port``) over 1,000 targets,
as when a list of ports is filtered, for one caller: 1,000 ``decide``
calls against one ``decide_many``, with the embedded driver and over
http to a real OPA (``opa run --server`` with the bundle ``oslo-opa
bundle`` writes), decision cache off.  Two lists: ports of seven owners
(a list as a project sees it; equal inputs are decided once), and ports
of a thousand owners (every input differs: the rule's batch form,
``<rule>.batch.rego``, decides them in one query, over http in one
request).  Targets (issue 13): at least 10x over http, 2x embedded.
"""

from __future__ import annotations

import os
import time


def _lists() -> dict[str, list[dict]]:
    return {
        '7 owners': [
            {'project_id': f'p{i % 7}', 'id': f'port{i}'} for i in range(1000)
        ],
        '1,000 owners': [
            {'project_id': f'p{i}', 'id': f'port{i}'} for i in range(1000)
        ],
    }


def _compare(label: str, d, targets: list[dict], creds) -> None:
    rule = 'get_port'
    # Warm both: what each compiles or prepares on first use (a batch
    # bundle, OPA's prepared query) is not what is measured.
    for t in targets[:20]:
        d.decide(rule, t, creds)
    d.decide_many([(rule, t) for t in targets[-20:]], creds)
    # Each the best of three rounds: a single round is at the mercy of
    # whatever else the machine does for that long.
    each = batched = float('inf')
    for _ in range(3):
        start = time.perf_counter()
        one = [d.decide(rule, t, creds) for t in targets]
        each = min(each, time.perf_counter() - start)
        start = time.perf_counter()
        many = d.decide_many([(rule, t) for t in targets], creds)
        batched = min(batched, time.perf_counter() - start)
    print(
        f'{label:<32} decide x{len(targets)} {each * 1e3:>7.1f} ms, '
        f'decide_many {batched * 1e3:>6.1f} ms: {each / batched:>5.1f}x'
        + ('' if one == many else '  DISAGREED')
    )


def bench_batch(workdir: str) -> None:
    import bench
    from oslo_context import context

    from oslo_opa import bundle, decider
    from oslo_opa.convert import convert

    print(
        '== batch: 1,000 decisions of one rule for one caller, '
        'decide_many against decide (targets: 10x http, 2x embedded)'
    )
    out = os.path.join(workdir, 'batch-neutron')
    convert(
        out,
        policy_files=[os.path.join(bench.CORPUS, 'neutron.policy.yaml')],
        tests=False,
    )
    creds = context.RequestContext(
        user_id='u1', project_id='p1', roles=['member', 'reader']
    )
    embedded = decider.load(out, cache_size=0)
    for name, targets in _lists().items():
        _compare(f'embedded, {name}', embedded, targets, creds)
    embedded.close()
    opa_bin = bench._opa_binary()
    if not opa_bin:
        print('http: skipped (no OPA: install Go, or set OSLO_OPA_BIN)')
        return
    path = os.path.join(workdir, 'batch-neutron.tar.gz')
    bundle.build(out, path)
    proc, url = bench._start_opa(opa_bin, path, workdir)
    try:
        http = decider.load(
            out,
            driver='http',
            cache_size=0,
            opa_url=url,
            opa_read_timeout=30.0,
        )
        http.driver.wait_warm_up(120)
        for name, targets in _lists().items():
            _compare(f'http, {name}', http, targets, creds)
        http.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
