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
``decide``
    Per-decision latency (p50, p99) of one oslo.policy Enforcer on the
    original policy file (the baseline) against one on the delegation
    file with the embedded driver, on the same requests, interleaved.
    The requests are a realistic mix: every rule of the service, asked
    by a population of users (project members and readers, project
    admins, domain managers, system readers) holding RequestContexts,
    about targets that carry the keys the rules read plus a dozen
    unrelated fields, half of them the caller's own resources.
    "uncached" turns the decision cache off; "replay" turns it on and
    replays a day in which each user repeats requests on their own
    resources (every request is asked several times, in random order).
``startup``
    One API worker's footprint, in fresh processes (``bench_footprint.py``):
    RSS added, start-up and a first pass over every rule, embedded
    against native, for keystone, nova and neutron; then, in this
    process, loading neutron's conversion and building its bundles.
``http``
    The http driver against a real OPA (``opa run --server --bundle``,
    the binary ``tools/install-opa.sh`` builds, or ``$OSLO_OPA_BIN``),
    on a loopback port and on a unix socket (``bench_http.py``), on the
    realistic mix above.  ``driver.decide`` alone against, in the same
    run, a naive client that opens a new connection per decision with
    ``requests.post`` (what the oslo.policy.opa project does) and a
    pooled ``requests.Session``: p50/p99, 1- and 4-thread throughput.
    The driver's overhead over OPA's own time for the same requests
    (``?metrics``: ``timer_server_handler_ns``; target at most 100 us
    at p50 on the unix socket), next to a bare socket client's (the
    part of it no client avoids), with how often OPA found the query
    prepared (it keeps 100 paths).  The unix socket again with OPA and
    this process on one CPU (``1cpu``, ``taskset``): what the wake-ups
    across CPUs cost.  Then through oslo.policy: an Enforcer whose
    ``opa:`` checks use the driver against one whose checks use the
    naive client (same Decider, same inputs), target the driver at
    least 3x faster at p50.
``overlay``
    What overlays cost the embedded driver: p50/p99 against native and
    against no overlay (``bench_overlays.py``).
``inputs``
    No slow inputs: every rule over the inputs the differential tests
    generate, by input class, embedded against native
    (``bench_inputs.py``).
``batch``
    1,000 decisions of one rule: decide_many against decide, embedded
    and over http to a real OPA (``bench_batch.py``).
``metrics``
    A decision recorded in the Prometheus metrics against the same
    decision not recorded, cache off and on, and the cost of one
    recording in single-process and multiprocess mode
    (``bench_metrics.py``).
``rollout``
    What rolling out costs a request: shadow mode, decision logs to a
    file and to a decision-log service, metrics, each against native
    oslo.policy in the same run (``bench_rollout.py``).
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

from oslo_opa import check, opts  # noqa: E402
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


def _users(rng):
    from oslo_context import context

    users = []
    for i in range(20):
        project = f'p{i % 5}'
        kind = i % 5
        roles, extra = {
            0: (['member', 'reader'], {}),
            1: (['reader'], {}),
            2: (['admin', 'member', 'reader'], {}),
            3: (['manager', 'member', 'reader'], {}),
            4: (['reader'], {'system_scope': 'all'}),
        }[kind]
        users.append(
            context.RequestContext(
                user_id=f'u{i}',
                project_id=None if extra else project,
                domain_id=None,
                user_domain_id='default',
                project_domain_id='default',
                roles=roles,
                **extra,
            )
        )
    return users


def _requests(rules, users, rng, count):
    """(rule, target, creds) triples: a realistic mix, reproducible."""
    out = []
    for _ in range(count):
        name, entry = rng.choice(rules)
        user = rng.choice(users)
        values = user.to_policy_values()
        own = rng.random() < 0.5
        target = {f'field{j}': f'value{j}' for j in range(12)}
        for key in entry['target_keys']:
            if own and 'user' in key:
                target[key] = values['user_id']
            elif own:
                target[key] = values['project_id'] or 'p0'
            else:
                target[key] = rng.choice(['p1', 'p3', 'u7', 'default'])
        out.append((name, target, user))
    return out


def _enforcer(policy_file, svc_defaults, rego_path=None, cache=0):
    conf = cfg.ConfigOpts()
    conf(args=[], default_config_files=[])
    enforcer = oslo_policy.Enforcer(conf, policy_file=policy_file)
    conf.set_override('policy_dirs', [], 'oslo_policy')
    if rego_path:
        opts.register_opts(conf)
        conf.set_override('rego_path', rego_path, 'oslo_opa')
        conf.set_override('cache_size', cache, 'oslo_opa')
        conf.set_override('cache_ttl', 3600.0, 'oslo_opa')
    enforcer.suppress_deprecation_warnings = True
    enforcer.suppress_default_change_warnings = True
    enforcer.register_defaults(svc_defaults)
    enforcer.load_rules()
    return enforcer


def _percentiles(samples):
    samples = sorted(samples)
    return (
        samples[len(samples) // 2],
        samples[min(len(samples) - 1, int(len(samples) * 0.99))],
    )


def bench_decide(workdir: str, services: list[str], count: int) -> None:
    import json
    import logging
    import random
    import warnings

    from tests import corpus

    logging.getLogger('oslo_policy').setLevel(logging.ERROR)
    warnings.simplefilter('ignore')
    print(
        '== decide: native oslo.policy vs delegated to the embedded '
        f'driver ({count} requests per run, interleaved)'
    )
    print(
        f'{"service":<9} {"run":<9} {"native p50":>10} {"p99":>7} '
        f'{"opa p50":>8} {"p99":>7} {"p50 ratio":>9} {"p99 ratio":>9}'
    )
    for svc in services:
        out = os.path.join(workdir, f'decide-{svc}')
        policy_file = os.path.join(CORPUS, f'{svc}.policy.yaml')
        convert(out, policy_files=[policy_file])
        with open(os.path.join(out, 'manifest.json')) as f:
            rules = sorted(json.load(f)['rules'].items())
        defaults = corpus.defaults(svc)
        rng = random.Random(7)
        users = _users(rng)
        native = _enforcer(policy_file, defaults)
        for run, cache in (('uncached', 0), ('replay', 4096)):
            check.reset()
            delegated = _enforcer(
                os.path.join(out, 'policy.yaml'), defaults, out, cache
            )
            requests = _requests(rules, users, rng, count)
            if run == 'replay':
                # Each request asked again and again, in random order.
                distinct = requests[: max(1, count // 8)]
                requests = [rng.choice(distinct) for _ in range(count)]
            # Warm up: compile every rule's bundle, fill caches.
            for name, target, user in requests[: min(len(requests), 400)]:
                delegated.enforce(name, target, user)
            for name, _entry in rules:
                delegated.enforce(name, {}, users[0])
            t_native, t_opa = [], []
            disagree = 0
            clock = time.perf_counter
            for i, (name, target, user) in enumerate(requests):
                pair = [(native, t_native), (delegated, t_opa)]
                if i % 2:
                    pair.reverse()
                answers = []
                for enf, times in pair:
                    start = clock()
                    answers.append(enf.enforce(name, target, user))
                    times.append(clock() - start)
                disagree += bool(answers[0]) != bool(answers[1])
            n50, n99 = _percentiles(t_native)
            o50, o99 = _percentiles(t_opa)
            print(
                f'{svc:<9} {run:<9} {n50 * 1e6:>8.0f}us {n99 * 1e6:>5.0f}us '
                f'{o50 * 1e6:>6.0f}us {o99 * 1e6:>5.0f}us '
                f'{o50 / n50:>9.2f} {o99 / n99:>9.2f}'
                + (f'  DISAGREED {disagree}' if disagree else '')
            )


def _opa_binary() -> str | None:
    import subprocess

    explicit = os.environ.get('OSLO_OPA_BIN')
    if explicit:
        return explicit
    proc = subprocess.run(
        ['bash', os.path.join(HERE, 'install-opa.sh')],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
        timeout=1800,
    )
    lines = proc.stdout.strip().splitlines()
    return lines[-1] if proc.returncode == 0 and lines else None


def _start_opa(
    opa_bin: str,
    bundle_path: str,
    workdir: str,
    unix: bool = False,
    cpu: int | None = None,
):
    """OPA serving bundle_path on a loopback port (or a unix socket in
    workdir), on the CPU cpu alone if given: (process, opa_url)."""
    import socket
    import subprocess

    from oslo_opa.drivers.http import Transport, TransportError

    if unix:
        path = os.path.join(workdir, 'opa.sock')
        if os.path.exists(path):
            os.unlink(path)
        addr = url = f'unix://{path}'
    else:
        with socket.socket() as s:
            s.bind(('127.0.0.1', 0))
            addr = f'127.0.0.1:{s.getsockname()[1]}'
        url = f'http://{addr}'
    log = open(os.path.join(workdir, 'opa.log'), 'wb')  # noqa: SIM115
    # taskset (util-linux), not preexec_fn: this process has threads.
    pin = [] if cpu is None else ['taskset', '-c', str(cpu)]
    proc = subprocess.Popen(
        [
            *pin, opa_bin, 'run', '--server', '--addr', addr,
            '--log-level', 'error', '--skip-version-check',
            '--shutdown-grace-period', '1', '--bundle', bundle_path,
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )  # fmt: skip
    client = Transport(url, connect_timeout=1.0, read_timeout=5.0)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if client.request('GET', '/health?bundles')[0] == 200:
                    return proc, url
            except TransportError:
                pass
            time.sleep(0.05)
    finally:
        client.close()
    proc.kill()
    raise RuntimeError(f'OPA did not start (see {workdir}/opa.log)')


def _throughput(fn, items, threads: int) -> float:
    """Decisions per second of fn over items, split across threads."""
    import threading

    chunks = [items[i::threads] for i in range(threads)]
    workers = [
        threading.Thread(target=lambda c=c: [fn(*x) for x in c])
        for c in chunks
    ]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return len(items) / (time.perf_counter() - start)


def bench_startup(workdir: str) -> None:
    import resource

    from bench_footprint import bench_footprint

    bench_footprint(workdir, ['keystone', 'nova', 'neutron'])
    print("== startup: load neutron's converted policy, build its bundles")
    out = os.path.join(workdir, 'startup-neutron')
    convert(out, policy_files=[os.path.join(CORPUS, 'neutron.policy.yaml')])
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    policy = RegoPolicy(out)
    policy.validate()
    ready = time.perf_counter() - start
    rss_ready = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # What ordinary traffic builds: each rule's fast bundle for ASCII
    # inputs with lower-case roles (rules with the same fast path share
    # one).
    start = time.perf_counter()
    fast = {
        id(policy.bundle(r, True, True, True, True))
        for r in policy.manifest.rules
    }
    fast_built = time.perf_counter() - start
    rss_fast = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # The worst case: every rule's full bundle too (inputs on which some
    # check could raise, non-ASCII text).
    start = time.perf_counter()
    for rule in policy.manifest.rules:
        policy.bundle(rule)
    all_built = time.perf_counter() - start
    rss_all = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        f'load (compiles what is edited) {ready * 1e3:.0f} ms, max RSS +'
        f'{(rss_ready - rss0) / 1024:.0f} MiB; '
        f'fast bundles for {len(policy.manifest.rules)} rules '
        f'({len(fast)} distinct) {fast_built * 1e3:.0f} ms, +'
        f'{(rss_fast - rss_ready) / 1024:.0f} MiB; '
        f'every full bundle too {all_built * 1e3:.0f} ms, +'
        f'{(rss_all - rss_fast) / 1024:.0f} MiB'
    )


def bench_threads(workdir: str, count: int) -> None:
    import threading

    import regopy

    print('== threads: an interpreter per thread vs one behind a lock')
    out = os.path.join(workdir, 'threads-keystone')
    convert(out, policy_files=[os.path.join(CORPUS, 'keystone.policy.yaml')])
    policy = RegoPolicy(out)
    rule = 'identity:get_project'
    creds = {'roles': ['reader'], 'project_id': 'p1', 'domain_id': None}
    doc = policy.input_for(rule, creds, {'target.project.id': 'p1'})
    bundle = policy.bundle(rule, ascii_only=True)
    path = policy.manifest.rules[rule].path
    shared = regopy.Interpreter()
    lock = threading.Lock()

    def pooled(n):
        it = regopy.Interpreter()
        for _ in range(n):
            it.set_input(regopy.Input(doc))
            it.query_bundle_entrypoint(bundle, path)

    def locked(n):
        for _ in range(n):
            with lock:
                shared.set_input(regopy.Input(doc))
                shared.query_bundle_entrypoint(bundle, path)

    per_thread = max(1, count // 4)
    for name, fn in (('per thread', pooled), ('one + lock', locked)):
        threads = [
            threading.Thread(target=fn, args=(per_thread,)) for _ in range(4)
        ]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - start
        print(f'{name:<11} {4 * per_thread / elapsed:8.0f} decisions/s')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        'sections',
        nargs='*',
        metavar='SECTION',
        help='convert, load, decide, startup, threads, http, overlay, '
        'batch, inputs, metrics, rollout, bundle (default: all)',
    )
    parser.add_argument('--repeat', type=int, default=3)
    parser.add_argument(
        '--requests', type=int, default=4000, help='requests per run'
    )
    parser.add_argument(
        '--services',
        default='keystone,nova,neutron,cinder,glance,manila',
        help='services for the decide section',
    )
    parser.add_argument(
        '--overlay-services',
        default='keystone,nova,neutron',
        help='services for the overlay section',
    )
    parser.add_argument(
        '--inputs-services',
        default='keystone,nova,neutron',
        help='services for the inputs section',
    )
    parser.add_argument(
        '--inputs-per-rule',
        type=int,
        default=40,
        help='generated inputs per rule in the inputs section',
    )
    parser.add_argument(
        '--rollout-services',
        default='keystone,nova',
        help='services for the rollout section',
    )
    parser.add_argument(
        '--http-services',
        default='placement,nova',
        help='services for the http section',
    )
    args = parser.parse_args(argv)
    known = [
        'convert',
        'load',
        'decide',
        'startup',
        'threads',
        'http',
        'overlay',
        'batch',
        'inputs',
        'metrics',
        'rollout',
        'bundle',
    ]
    sections = args.sections or known
    unknown = set(sections) - set(known)
    if unknown:
        parser.error(f'unknown section(s): {", ".join(sorted(unknown))}')
    with tempfile.TemporaryDirectory(prefix='oslo-opa-bench-') as work:
        if 'convert' in sections or 'load' in sections:
            outputs = bench_convert(work, args.repeat)
        if 'load' in sections:
            bench_load(outputs)
        if 'decide' in sections:
            bench_decide(work, args.services.split(','), args.requests)
        if 'startup' in sections:
            bench_startup(work)
        if 'threads' in sections:
            bench_threads(work, args.requests)
        if 'http' in sections:
            from bench_http import bench_http

            bench_http(work, args.http_services.split(','), args.requests)
        if 'bundle' in sections:
            from bench_bundle import bench_bundle

            bench_bundle(work)
        if 'batch' in sections:
            from bench_batch import bench_batch

            bench_batch(work)
        if 'inputs' in sections:
            from bench_inputs import bench_inputs

            bench_inputs(
                work, args.inputs_services.split(','), args.inputs_per_rule
            )
        if 'metrics' in sections:
            from bench_metrics import bench_metrics

            bench_metrics(work, args.requests)
        if 'rollout' in sections:
            from bench_rollout import bench_rollout

            bench_rollout(
                work, args.rollout_services.split(','), args.requests
            )
        if 'overlay' in sections:
            from bench_overlays import bench_overlays

            bench_overlays(
                work, args.overlay_services.split(','), args.requests
            )
    return 0


if __name__ == '__main__':
    sys.exit(main())
