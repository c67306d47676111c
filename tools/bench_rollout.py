"""``tox -e bench -- rollout``: what rolling out costs a request.

One oslo.policy Enforcer on the original policy file (native, the
baseline) against Enforcers on the delegation file: in shadow mode
(oslo.policy decides, Rego compared in the background), enforcing with
the embedded driver, and enforcing with decision logs to a file, to a
decision-log service (a local HTTP collector) and with metrics on.  The
same realistic mix of requests (see ``bench.py``'s decide section),
interleaved, decision cache off; p50/p99 per request and their ratio to
native in the same run.  Target: shadow mode at most 1.10x native at p50.
The background work is not on the request, but shares the interpreter:
a tight loop leaves it no idle time, so shadow mode also reports how
many comparisons it made and dropped.
"""

from __future__ import annotations

import gzip
import http.server
import json
import logging
import os
import random
import threading
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(os.path.dirname(HERE), 'tests', 'fixtures', 'corpus')


class _Collector(http.server.ThreadingHTTPServer):
    def __init__(self) -> None:
        self.received = 0
        super().__init__(('127.0.0.1', 0), _Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers['Content-Length']))
        self.server.received += len(json.loads(gzip.decompress(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def bench_rollout(workdir: str, services: list[str], count: int) -> None:
    import bench

    from oslo_opa import check, metrics
    from oslo_opa.convert import convert
    from tests import corpus

    logging.getLogger('oslo_policy').setLevel(logging.ERROR)
    logging.getLogger('oslo_opa').setLevel(logging.ERROR)
    warnings.simplefilter('ignore')
    print(
        f'== rollout: shadow mode, decision logs, metrics against native '
        f'({count} requests, interleaved, cache off)'
    )
    collector = _Collector()
    url = f'http://127.0.0.1:{collector.server_address[1]}'
    for svc in services:
        out = os.path.join(workdir, f'rollout-{svc}')
        policy_file = os.path.join(CORPUS, f'{svc}.policy.yaml')
        convert(out, policy_files=[policy_file])
        with open(os.path.join(out, 'manifest.json')) as f:
            rules = sorted(json.load(f)['rules'].items())
        defaults = corpus.defaults(svc)
        rng = random.Random(11)
        users = bench._users(rng)
        delegation = os.path.join(out, 'policy.yaml')
        variants: dict[str, dict] = {
            'shadow': {'mode': 'shadow'},
            'enforce': {},
            'log file': {
                'decision_log_file': os.path.join(workdir, f'{svc}.log')
            },
            'log service': {'decision_log_url': url},
            'metrics': {'metrics': 'registry'},
        }
        requests = bench._requests(rules, users, rng, count)
        native = bench._enforcer(policy_file, defaults)
        print(
            f'{svc}: {"variant":<12} {"p50":>7} {"p99":>7} '
            f'{"native p50":>10} {"p50 ratio":>9} {"p99 ratio":>9}'
        )
        # One variant at a time against native, interleaved: a variant's
        # background thread must not weigh on another's requests.
        for name, options in variants.items():
            check.reset()
            enf = bench._enforcer(delegation, defaults, out, 0)
            for key, value in options.items():
                enf.conf.set_override(key, value, 'oslo_opa')
            if name == 'metrics':
                metrics.configure('registry')
            pair = [(native, []), (enf, [])]
            for rule, target, user in requests[:300]:  # compile
                enf.enforce(rule, target, user)
            clock = time.perf_counter
            for i, (rule, target, user) in enumerate(requests):
                for e, samples in pair if i % 2 else pair[::-1]:
                    start = clock()
                    e.enforce(rule, target, user)
                    samples.append(clock() - start)
            metrics.configure('off')
            n50, n99 = bench._percentiles(pair[0][1])
            p50, p99 = bench._percentiles(pair[1][1])
            print(
                f'{"":<{len(svc) + 1}} {name:<12} {p50 * 1e6:>5.0f}us '
                f'{p99 * 1e6:>5.0f}us {n50 * 1e6:>8.0f}us '
                f'{p50 / n50:>9.2f} {p99 / n99:>9.2f}'
            )
            decider = check.decider_for(enf.conf)
            if decider.shadow is not None:
                shadow = decider.shadow
                shadow.flush(120)
                print(
                    f'{"":<{len(svc) + 14}} {shadow.compared} compared, '
                    f'{sum(shadow.dropped.values())} dropped, '
                    f'{sum(shadow.mismatches.values())} differed'
                )
            if decider.log is not None:
                decider.log.flush(60)
                if options.get('decision_log_url'):
                    time.sleep(1.5)  # the sink sends at least every second
                    print(
                        f'{"":<{len(svc) + 14}} the service received '
                        f'{collector.received} events'
                    )
                    collector.received = 0
        check.reset()
    collector.shutdown()
