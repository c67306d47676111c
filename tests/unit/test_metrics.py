"""Prometheus metrics (``oslo_opa.metrics``): the exposition parses, the
counters move as a real Decider decides, in one process and in
prometheus_client's multiprocess mode (forked and spawned workers), the
``serve`` exporter answers a real scrape, and no label carries an input
value."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request

import pytest
from oslo_config import cfg
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from oslo_opa import decider, metrics
from oslo_opa.convert import convert
from tests import policies
from tests.processes import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
ADMIN = {'roles': ['admin'], 'project_id': 'p1', 'user_id': 'u1'}
MEMBER = {'roles': ['member'], 'project_id': 'p2', 'user_id': 'u2'}


@pytest.fixture
def metrics_on():
    metrics.configure('registry')
    yield
    metrics.configure('off')


@pytest.fixture
def converted(tmp_path):
    return policies.converted(str(tmp_path), policies.THINGS)


def families(text: str | None = None) -> dict:
    """The exposition (REGISTRY's by default), parsed: name -> family."""
    if text is None:
        text = generate_latest(REGISTRY).decode('utf-8')
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(name: str, text: str | None = None, **labels: str) -> float:
    """The sum of name's samples whose labels include labels."""
    total = 0.0
    for family in families(text).values():
        for s in family.samples:
            if s.name == name and labels.items() <= s.labels.items():
                total += s.value
    return total


def _counted(rule: str) -> float:
    return sum(
        s.value
        for fam in metrics._m.decisions.collect()
        for s in fam.samples
        if s.name.endswith('_total') and s.labels['rule'] == rule
    )


def decide(d, rule, target, creds):
    """d.decide, which must count itself exactly once."""
    before = _counted(rule)
    allowed = d.decide(rule, target, creds)
    assert _counted(rule) == before + 1
    return allowed


def test_off_by_default_prometheus_client_is_not_even_imported(converted):
    # A fresh process: another test may have turned metrics on here.
    script = f"""
import sys
from oslo_opa import decider, metrics
d = decider.load({converted!r}, cache_size=0)
assert d.decide('get_thing', {{'project_id': 'p1'}}, {ADMIN!r})
metrics.decision('get_thing', True, 'embedded', 'full', 1e-5)
metrics.reload(True, 'embedded')
assert 'prometheus_client' not in sys.modules, 'imported'
"""
    run = subprocess.run(
        [sys.executable, '-c', script],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr


def test_exposition_parses_and_counters_move(converted, metrics_on):
    allow = dict(rule='get_thing', result='allow', driver='embedded')
    deny = dict(allow, result='deny')
    name = 'oslo_opa_decisions_total'
    before = (value(name, **allow), value(name, **deny))
    seen = value('oslo_opa_decision_duration_seconds_count')
    loads = value('oslo_opa_reloads_total', driver='embedded', result='ok')
    d = decider.load(converted, cache_size=0)
    try:
        for _ in range(3):
            assert decide(d, 'get_thing', {'project_id': 'x'}, ADMIN)
        assert not decide(d, 'get_thing', {'project_id': 'x'}, MEMBER)
        in_force = d.revision()
    finally:
        d.close()
    fams = families()
    assert fams['oslo_opa_decisions'].type == 'counter'
    assert fams['oslo_opa_decision_duration_seconds'].type == 'histogram'
    assert value(name, **allow) == before[0] + 3
    assert value(name, **deny) == before[1] + 1
    assert value('oslo_opa_decision_duration_seconds_count') == seen + 4
    # Buckets for 10 us .. 100 ms.
    les = {
        s.labels['le']
        for s in fams['oslo_opa_decision_duration_seconds'].samples
        if s.name.endswith('_bucket')
    }
    assert {'1e-05', '0.0001', '0.001', '0.01', '0.1', '+Inf'} <= les
    # The load is counted, and its revision is in force.
    assert value('oslo_opa_reloads_total', driver='embedded', result='ok') == (
        loads + 1
    )
    revs = [
        s
        for s in fams['oslo_opa_policy_revision_info'].samples
        if s.labels['driver'] == 'embedded' and s.value == 1
    ]
    # The conversion's revision, as decision logs carry it.
    assert in_force.startswith('p-')
    assert [s.labels['revision'] for s in revs] == [in_force]


def test_reloads_and_the_revision_follow_the_policy(tmp_path, metrics_on):
    out = policies.converted(str(tmp_path), policies.THINGS)
    ok = dict(driver='embedded', result='ok')
    failed = dict(driver='embedded', result='failed')
    start = value('oslo_opa_reloads_total', **ok)
    d = decider.load(out, cache_size=0, reload_interval=0)

    def in_force():
        return {
            s.labels['revision']
            for s in families()['oslo_opa_policy_revision_info'].samples
            if s.labels['driver'] == 'embedded' and s.value == 1
        }

    try:
        first = in_force()
        assert len(first) == 1
        # A new conversion: reloaded, a new revision, the old one gone.
        src = tmp_path / 'p.yaml'
        src.write_text(policies.THINGS + 'extra: role:x\n')
        convert(out, policy_files=[str(src)])
        assert decide(d, 'extra', {}, {'roles': ['x']})
        second = in_force()
        assert len(second) == 1 and second != first
        assert value('oslo_opa_reloads_total', **ok) == start + 2
        names = {
            s.labels['revision']
            for s in families()['oslo_opa_policy_revision_info'].samples
        }
        assert not names & first
        # A broken module: the failure is counted, the revision stays.
        broken = value('oslo_opa_reloads_total', **failed)
        module = os.path.join(out, d.driver.manifest.rules['extra'].module)
        with open(module, 'a') as f:
            f.write('\nthis is { not rego\n')
        assert decide(d, 'extra', {}, {'roles': ['x']})
        assert value('oslo_opa_reloads_total', **failed) == broken + 1
        assert in_force() == second
    finally:
        d.close()


def test_every_event_has_its_metric_and_labels(metrics_on):
    calls = [
        (metrics.shadow_mismatch, ('r1',), 'oslo_opa_shadow_mismatches_total'),
        (metrics.shadow_dropped, ('r1',), 'oslo_opa_shadow_dropped_total'),
        (metrics.fallback, ('r1', 'oslo.policy'), 'oslo_opa_fallbacks_total'),
        (
            metrics.evaluation_error,
            ('r1', 'http'),
            'oslo_opa_evaluation_errors_total',
        ),
        (
            metrics.breaker_opened,
            ('x',),
            'oslo_opa_circuit_breaker_opens_total',
        ),
        (
            metrics.log_dropped,
            ('file',),
            'oslo_opa_decision_log_dropped_total',
        ),
        (metrics.reload, (False, 'x'), 'oslo_opa_reloads_total'),
    ]
    for fn, args, name in calls:
        before = value(name)
        fn(*args)
        fn(*args)
        assert value(name) == before + 2, name
    assert value('oslo_opa_fallbacks_total', rule='r1', to='oslo.policy')
    assert value('oslo_opa_reloads_total', driver='x', result='failed')
    metrics.breaker('x', 'open')
    assert value('oslo_opa_circuit_breaker_open', driver='x') == 1
    metrics.breaker('x', 'closed')
    assert value('oslo_opa_circuit_breaker_open', driver='x') == 0
    metrics.revision('a-1', 'x')
    metrics.revision('a-2', 'x')
    revs = {
        s.labels['revision']: s.value
        for s in families()['oslo_opa_policy_revision_info'].samples
        if s.labels['driver'] == 'x'
    }
    assert revs == {'a-2': 1.0}


def test_off_again_records_nothing(metrics_on):
    name = 'oslo_opa_shadow_mismatches_total'
    metrics.configure('off')
    before = value(name, rule='quiet')
    metrics.shadow_mismatch('quiet')
    metrics.decision('quiet', True, 'embedded', 'full', 1e-5)
    assert value(name, rule='quiet') == before
    metrics.configure('registry')
    metrics.configure('registry')  # idempotent
    metrics.shadow_mismatch('quiet')
    assert value(name, rule='quiet') == before + 1
    with pytest.raises(ValueError):
        metrics.configure('loud')


def test_no_label_carries_input_values(converted, metrics_on):
    secret = 'tgt-5ecret-7f3a'
    creds = dict(
        MEMBER,
        user_id='usr-5ecret-9c1d',
        auth_token='tok-5ecret-2b8e',
        project_id=secret,
    )
    d = decider.load(converted, cache_size=16, failure_mode='fallback')
    try:
        target = {'project_id': secret, 'name': 'nm-5ecret-4d0c'}
        assert decide(d, 'get_thing', target, creds)
        assert decide(d, 'get_thing', target, creds)  # cached
        assert not decide(d, 'nope', target, creds)  # a failure
        d.decide_many([('get_thing', target), ('delete_thing', target)], creds)
    finally:
        d.close()
    text = generate_latest(REGISTRY).decode('utf-8')
    assert 'oslo_opa_decisions_total' in text
    assert '5ecret' not in text


def test_rule_labels_are_bounded(metrics_on, monkeypatch):
    monkeypatch.setattr(metrics, 'MAX_RULES', len(metrics._m.rules) + 2)
    other = value('oslo_opa_decisions_total', rule=metrics.OTHER)
    for n in range(5):
        metrics.decision(f'made-up-{n}', False, 'embedded', 'error', 1e-5)
    assert value('oslo_opa_decisions_total', rule='made-up-1') == 1
    assert value('oslo_opa_decisions_total', rule='made-up-2') == 0
    assert value('oslo_opa_decisions_total', rule=metrics.OTHER) == other + 3


def test_recording_never_raises_into_a_decision(
    metrics_on, caplog, monkeypatch
):
    # Logged once per process: start as a fresh one.
    monkeypatch.setattr(metrics, '_complained', False)
    # A histogram cannot observe a string: a failure, logged once.
    metrics.decision('get_thing', True, 'embedded', 'full', 'soon')
    metrics.decision('get_thing', True, 'embedded', 'full', 'soon')
    monkey = metrics._m
    try:
        metrics._m = None  # every recorder fails
        metrics.shadow_mismatch('r')
        metrics.breaker('http', 'open')
        metrics.revision('r-1', 'http')
        metrics.policy_loaded(object(), object())
    finally:
        metrics._m = monkey
    logged = [r for r in caplog.records if 'recording a metric' in r.message]
    assert len(logged) == 1


class _AnyAnswer(http.server.BaseHTTPRequestHandler):
    """An OPA stand-in that answers every request: enough for a probe."""

    def do_POST(self):  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get('Content-Length', 0)))
        body = b'{"result": false}'
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST  # noqa: N815

    def log_message(self, *args):
        pass


def _wait(predicate, timeout=5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not predicate():
        time.sleep(0.02)
    return predicate()


def test_circuit_breaker_state_and_opens(converted, metrics_on):
    port = free_port()
    opens = value('oslo_opa_circuit_breaker_opens_total', driver='http')
    d = decider.load(
        converted,
        driver='http',
        cache_size=0,
        opa_url=f'http://127.0.0.1:{port}',
        opa_connect_timeout=0.2,
        opa_read_timeout=0.2,
        opa_circuit_breaker_interval=0.3,
        opa_warm_up=False,
    )
    server = None
    try:
        gauge = 'oslo_opa_circuit_breaker_open'
        assert value(gauge, driver='http') == 0
        assert not d.decide('get_thing', {}, ADMIN)  # refused: opens
        assert d.driver.circuit_open
        assert value(gauge, driver='http') == 1
        total = value('oslo_opa_circuit_breaker_opens_total', driver='http')
        assert total == opens + 1
        server = http.server.ThreadingHTTPServer(
            ('127.0.0.1', port), _AnyAnswer
        )
        threading.Thread(target=server.serve_forever, daemon=True).start()
        assert _wait(lambda: value(gauge, driver='http') == 0)
        assert not d.driver.circuit_open
    finally:
        d.close()
        if server is not None:
            server.shutdown()
            server.server_close()


def test_serve_mode_answers_a_scrape(converted, tmp_path):
    port = free_port()
    conf = cfg.ConfigOpts()
    conf(args=[], default_config_files=[])
    from oslo_opa import opts

    opts.register_opts(conf)
    conf.set_override('rego_path', converted, 'oslo_opa')
    conf.set_override('metrics', 'serve', 'oslo_opa')
    conf.set_override('metrics_listen', f'127.0.0.1:{port}', 'oslo_opa')
    d = decider.from_conf(conf)
    try:
        metrics.configure('serve', f'127.0.0.1:{port}')  # once per process
        assert decide(d, 'get_thing', {'project_id': 'p1'}, ADMIN)
        url = f'http://127.0.0.1:{port}/metrics'
        with urllib.request.urlopen(url, timeout=5) as answer:
            text = answer.read().decode('utf-8')
        assert value('oslo_opa_decisions_total', text, rule='get_thing') >= 1
        assert value('oslo_opa_reloads_total', text, driver='embedded') >= 1
    finally:
        d.close()
        metrics.configure('off')
        if metrics._server is not None:
            metrics._server[0].shutdown()
            metrics._server[0].server_close()
            metrics._served_pid = metrics._server = None


# A service's master process in multiprocess mode: metrics on (serve),
# a few decisions, then WORKERS forked workers deciding DECISIONS each,
# then it waits, serving, until stdin closes.
MASTER = """
import os, sys
sys.path.insert(0, {root!r})
from oslo_opa import decider, metrics
from tests.unit.test_metrics import decide, ADMIN, MEMBER
metrics.configure({mode!r}, '127.0.0.1:{port}')
d = decider.load({rego!r}, cache_size=0)
decide(d, 'get_thing', {{}}, ADMIN)
pids = []
for n in range({workers}):
    pid = os.fork()
    if pid == 0:
        try:
            # A worker turns metrics on too: the port is taken, fine.
            metrics.configure({mode!r}, '127.0.0.1:{port}')
            for i in range({decisions}):
                decide(d, 'get_thing', {{}}, ADMIN)
                decide(d, 'delete_thing', {{}}, MEMBER)
        finally:
            os._exit(0)
    pids.append(pid)
for pid in pids:
    assert os.waitpid(pid, 0)[1] == 0
print('ready', flush=True)
sys.stdin.read()
"""


def _master(tmp_path, rego, mode, port, workers, decisions):
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(tmp_path / 'prom'))
    os.makedirs(env['PROMETHEUS_MULTIPROC_DIR'], exist_ok=True)
    script = textwrap.dedent(MASTER).format(
        root=ROOT,
        mode=mode,
        port=port,
        rego=rego,
        workers=workers,
        decisions=decisions,
    )
    return subprocess.Popen(
        [sys.executable, '-c', script],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def test_multiprocess_mode_sums_forked_and_spawned_workers(
    converted, tmp_path
):
    port = free_port()
    masters = [
        _master(tmp_path, converted, 'serve', port, 3, 4),
        # Another service process, spawned, not forked: its own files.
        _master(tmp_path, converted, 'registry', port, 0, 0),
    ]
    try:
        for p in masters:
            assert p.stdout.readline().strip() == 'ready', p.stderr.read()
        url = f'http://127.0.0.1:{port}/metrics'
        with urllib.request.urlopen(url, timeout=5) as answer:
            served = answer.read().decode('utf-8')
    finally:
        for p in masters:
            p.communicate('', timeout=60)
    assert [p.returncode for p in masters] == [0, 0]
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path / 'prom'))
    collected = generate_latest(registry).decode('utf-8')
    for text in (collected, served):
        name = 'oslo_opa_decisions_total'
        # Each master once, then 3 workers x 4 of each rule.
        assert value(name, text, rule='get_thing', result='allow') == 2 + 12
        assert value(name, text, rule='delete_thing', result='deny') == 12
        count = 'oslo_opa_decision_duration_seconds_count'
        assert value(count, text) == 2 + 24
        # Each master loaded the policy; forked workers inherited it.
        assert value('oslo_opa_reloads_total', text, result='ok') == 2
        revs = [
            s
            for s in families(text)['oslo_opa_policy_revision_info'].samples
            if s.value == 1
        ]
        assert len(revs) == 1, revs


def test_the_decider_records_its_own_decisions(converted, metrics_on):
    d = decider.load(converted, cache_size=16)
    try:
        before = _counted('get_thing')
        d.decide('get_thing', {'project_id': 'p1'}, ADMIN)
        d.decide('get_thing', {'project_id': 'p1'}, ADMIN)
        assert _counted('get_thing') == before + 2
        assert value(
            'oslo_opa_decisions_total', rule='get_thing', path='cache'
        )
        # A batch: each decision counted, with its share of the call's
        # time (not 0, which would drag the histogram down).
        d.decide_many(
            [('get_thing', {'project_id': 'b1'}), ('delete_thing', {})],
            ADMIN,
        )
        assert value(
            'oslo_opa_decisions_total', rule='delete_thing', path='batch'
        )
        assert (
            value('oslo_opa_decision_duration_seconds_sum', path='batch') > 0
        )
    finally:
        d.close()


def test_the_metric_names_are_documented():
    with open(os.path.join(ROOT, 'doc', 'operators.rst')) as f:
        doc = f.read()
    for kind, name, _labels, _help in metrics._SPECS.values():
        full = f'oslo_opa_{name}' + ('_total' if kind == 'counter' else '')
        assert full in doc, full
