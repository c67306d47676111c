"""The http driver against real sockets that misbehave (no OPA needed).

``FakeOpa`` is a small socket server (TCP on 127.0.0.1 or a unix
socket) speaking just enough HTTP/1.1, keep-alive included, to answer
decisions like OPA, and switchable at any moment to: never answer,
reset the connection, answer garbage that is not HTTP, answer 500, or
answer well-formed HTTP with a body that is not a decision.  Nothing is
patched: the driver's own sockets, timeouts, retries, circuit breaker,
warm-up thread and connection pool are what is tested.  Every server
stops by itself (a lifetime) and at the end of its test.

Also here: the options, ``failure_mode = embedded``, and ``oslo-opa
bundle`` (its bytes and ``.manifest``; OPA loading it is a functional
test).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import os
import re
import select
import shutil
import socket
import struct
import subprocess
import sys
import tarfile
import threading
import time

import pytest
from oslo_config import cfg
from oslo_policy import policy as oslo_policy

from oslo_opa import bundle, check, cli, decider, opts
from oslo_opa.convert import convert
from oslo_opa.drivers import DecisionError, Settings
from oslo_opa.drivers.http import HttpDriver, Transport
from oslo_opa.errors import PolicyLoadError
from tests.processes import free_port

PREFIX = 'svc'
RULES = {
    'admin_required': 'role:admin',
    'owner': 'project_id:%(project_id)s',
    'admin_or_owner': 'rule:admin_required or rule:owner',
    'solo': 'role:s',
}
ADMIN = {'roles': ['admin'], 'project_id': 'p1', 'user_id': 'u1'}
READER = {'roles': ['reader'], 'project_id': 'p2', 'user_id': 'u2'}
# Generous bounds: the test machine may be loaded.
SLACK = 1.5
SERVER_LIFETIME = 50.0


@pytest.fixture(autouse=True)
def _fresh_deciders():
    check.reset()
    yield
    check.reset()


# --- a fake OPA that can misbehave -------------------------------------------


def _fake_decision(path: str, doc: dict) -> bool | None:
    """What the converted rules decide, for the fake's 'ok' answers."""
    creds = doc.get('input', {}).get('credentials', {})
    target = doc.get('input', {}).get('target', {})
    admin = 'admin' in (creds.get('roles') or [])
    owner = 'project_id' in target and target.get('project_id') == creds.get(
        'project_id'
    )
    return {
        'admin_required': admin,
        'owner': owner,
        'admin_or_owner': admin or owner,
        'solo': 's' in (creds.get('roles') or []),
        'added': 'x' in (creds.get('roles') or []),
    }.get(path.split('/')[-2])


class FakeOpa:
    """A socket server answering decisions; ``mode`` switches behaviour.

    Modes: ``ok``, ``plain`` (OPA's exact bytes without decision logs),
    ``hang`` (read the request, never answer), ``reset`` (read it, then
    RST), ``garbage`` (bytes that are not HTTP), ``500``, ``500true``
    (a 500 whose body reads like an allow), ``echo500`` (500 quoting the
    input, as a careless server might), ``undefined`` (``{}``),
    ``nonbool``, ``badjson``, ``array``.
    """

    def __init__(
        self, mode: str = 'ok', unix_path: str | None = None, port: int = 0
    ):
        self.mode = mode
        self.unix_path = unix_path
        if unix_path:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.bind(unix_path)
            self.url = f'unix://{unix_path}'
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind(('127.0.0.1', port))
            self.url = 'http://127.0.0.1:%d' % self.sock.getsockname()[1]
        self.sock.listen(64)
        self.requests: list[tuple[str, str, bytes]] = []
        self.connections = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._deadline = time.monotonic() + SERVER_LIFETIME
        self._threads: list[threading.Thread] = []
        self._spawn(self._accept_loop)

    def _spawn(self, fn, *args):
        t = threading.Thread(target=fn, args=args, daemon=True)
        self._threads.append(t)
        t.start()

    def _running(self) -> bool:
        return not self._stop.is_set() and time.monotonic() < self._deadline

    def _accept_loop(self):
        while self._running():
            ready, _, _ = select.select([self.sock], [], [], 0.05)
            if not ready:
                continue
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            self._spawn(self._serve, conn)

    def _read_request(self, conn, buf):
        while b'\r\n\r\n' not in buf:
            if not self._running():
                return None, buf
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                return None, buf
            buf += chunk
        head, buf = buf.split(b'\r\n\r\n', 1)
        lines = head.decode('latin-1').split('\r\n')
        method, path, _ = lines[0].split(' ', 2)
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(':')
            if name.strip().lower() == 'content-length':
                length = int(value)
        while len(buf) < length and self._running():
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                return None, buf
            buf += chunk
        return (method, path, buf[:length]), buf[length:]

    def _serve(self, conn):
        conn.settimeout(0.05)
        buf = b''
        try:
            while self._running():
                req, buf = self._read_request(conn, buf)
                if req is None:
                    return
                with self._lock:
                    self.requests.append(req)
                mode = self.mode
                if mode == 'hang':
                    while self._running() and self.mode == 'hang':
                        time.sleep(0.02)
                    return
                if mode == 'reset':
                    conn.setsockopt(
                        socket.SOL_SOCKET,
                        socket.SO_LINGER,
                        struct.pack('ii', 1, 0),
                    )
                    return
                if mode == 'garbage':
                    conn.sendall(b'\x00\x13garbage, not HTTP\r\n\r\n\xff')
                    return
                status, body = self._answer(mode, *req)
                conn.sendall(
                    b'HTTP/1.1 %d X\r\nContent-Type: application/json\r\n'
                    b'Content-Length: %d\r\n\r\n%s' % (status, len(body), body)
                )
        except OSError:
            return
        finally:
            conn.close()

    def _answer(self, mode, method, path, body):
        if path.startswith('/health'):
            return 200, b'{}'
        try:
            doc = json.loads(body or b'{}')
        except ValueError:
            doc = {}
        if mode == '500':
            return 500, b'{"code":"internal_error","message":"boom"}'
        if mode == '500true':
            return 500, b'{"result":true}\n'
        if mode == 'echo500':
            msg = 'eval failed on %s' % json.dumps(doc)
            return 500, json.dumps({'code': 'x', 'message': msg}).encode()
        if mode == 'undefined':
            return 200, b'{}'
        if mode == 'nonbool':
            return 200, b'{"result": "yes"}'
        if mode == 'badjson':
            return 200, b'{"result": tru'
        if mode == 'array':
            return 200, b'[true]'
        result = _fake_decision(path.split('?')[0], doc)
        if result is None:
            return 200, b'{}'
        if mode == 'plain':
            return 200, b'{"result":%s}\n' % json.dumps(result).encode()
        return 200, json.dumps(
            {'result': result, 'decision_id': 'dec-%d' % len(self.requests)}
        ).encode()

    def data_requests(self):
        with self._lock:
            return [r for r in self.requests if r[1].startswith('/v1/data/')]

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(timeout=2)
        with contextlib.suppress(OSError):
            self.sock.close()
        if self.unix_path and os.path.exists(self.unix_path):
            os.unlink(self.unix_path)


@pytest.fixture
def fake_opa():
    servers = []

    def make(mode='ok', unix_path=None, port=0):
        server = FakeOpa(mode, unix_path, port)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture(scope='module')
def rego_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp('conv')
    src = root / 'svc.yaml'
    src.write_text(json.dumps(RULES))
    out = str(root / PREFIX)
    convert(out, policy_files=[str(src)], package_prefix=PREFIX)
    return out


def driver(rego_dir, url, **options):
    opts_ = {
        'opa_url': url,
        'opa_connect_timeout': 0.3,
        'opa_read_timeout': 0.3,
        'opa_circuit_breaker_interval': 0.4,
        'opa_warm_up': False,
        **options,
    }
    reload_interval = opts_.pop('reload_interval', 5.0)
    return HttpDriver(
        Settings(
            rego_path=rego_dir, reload_interval=reload_interval, options=opts_
        )
    )


def ask(drv, rule, creds, target=None):
    return drv.decide(rule, drv.input_for(rule, creds, target or {}))


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def open_fds() -> int:
    return len(os.listdir('/proc/self/fd'))


def background_threads():
    return [t for t in threading.enumerate() if t.name == 'oslo-opa-http']


# --- deciding ----------------------------------------------------------------


def test_decides_over_one_keep_alive_connection(rego_dir, fake_opa):
    server = fake_opa()
    drv = driver(rego_dir, server.url)
    try:
        for _ in range(50):
            assert ask(drv, 'admin_required', ADMIN) is True
            assert ask(drv, 'admin_required', READER) is False
        assert ask(drv, 'admin_or_owner', READER, {'project_id': 'p2'})
    finally:
        drv.close()
    assert server.connections == 1
    method, path, body = server.data_requests()[0]
    assert method == 'POST'
    assert path == '/v1/data/svc/admin_required/allow?strict-builtin-errors'
    # Projected as the embedded driver does: only what the rule reads.
    assert json.loads(body) == {
        'input': {
            'credentials': {'roles': ['admin']},
            'target': {},
            'rule': 'admin_required',
        }
    }


def test_unix_socket(rego_dir, fake_opa, tmp_path):
    server = fake_opa(unix_path=str(tmp_path / 'opa.sock'))
    drv = driver(rego_dir, server.url)
    try:
        assert ask(drv, 'admin_required', ADMIN) is True
        assert ask(drv, 'owner', READER, {'project_id': 'p2'}) is True
        assert ask(drv, 'owner', READER, {'project_id': 'p1'}) is False
    finally:
        drv.close()
    assert server.connections == 1


def test_opa_plain_answers_and_their_debug_line(rego_dir, fake_opa, caplog):
    server = fake_opa('plain')
    drv = driver(rego_dir, server.url)
    try:
        with caplog.at_level(logging.DEBUG, logger='oslo_opa'):
            assert ask(drv, 'admin_required', ADMIN) is True
            assert ask(drv, 'admin_required', READER) is False
    finally:
        drv.close()
    debug = [r.getMessage() for r in caplog.records]
    assert any(
        'allow from OPA' in m and 'decision_id None' in m for m in debug
    )
    assert any('deny from OPA' in m for m in debug)


@pytest.mark.parametrize(
    ('mode', 'message'),
    [
        ('500', 'HTTP 500 (internal_error)'),
        ('500true', 'HTTP 500'),
        ('undefined', 'is undefined in OPA'),
        ('nonbool', 'not a boolean'),
        ('badjson', 'invalid JSON'),
        ('array', 'unexpected JSON'),
    ],
)
def test_bad_answers_deny_with_one_line_naming_the_rule(
    rego_dir, fake_opa, caplog, mode, message
):
    server = fake_opa(mode)
    d = decider.load(
        rego_dir,
        driver='http',
        cache_size=0,
        opa_url=server.url,
        opa_warm_up=False,
    )
    try:
        with pytest.raises(DecisionError, match=re.escape(message)) as info:
            ask(d.driver, 'admin_required', ADMIN)
        assert "rule 'admin_required'" in str(info.value)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger='oslo_opa'):
            assert d.decide('admin_required', {}, ADMIN) is False
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 1, lines
        assert "'admin_required'" in lines[0] and message in lines[0]
        # OPA answered: the circuit stays closed, the next request goes.
        assert not d.driver.circuit_open
        server.mode = 'ok'
        assert d.decide('admin_required', {}, ADMIN) is True
    finally:
        d.close()


def test_credentials_never_logged(rego_dir, fake_opa, caplog):
    server = fake_opa('echo500')
    secret = 'sekrit-token-value'
    creds = {
        **ADMIN,
        'password': secret,
        'auth_token': secret,
        'roles': ['admin', secret],
    }
    d = decider.load(
        rego_dir,
        driver='http',
        cache_size=0,
        opa_url=server.url,
        opa_warm_up=False,
    )
    try:
        with caplog.at_level(logging.DEBUG):
            assert d.decide('admin_required', {'x': secret}, creds) is False
            server.mode = 'ok'
            assert d.decide('admin_required', {'x': secret}, creds) is True
            server.mode = 'reset'
            assert d.decide('admin_required', {'x': secret}, creds) is False
    finally:
        d.close()
    # The fake really received it: the logs are what kept it out.
    assert secret.encode() in server.data_requests()[0][2]
    text = '\n'.join(r.getMessage() for r in caplog.records)
    assert 'admin_required' in text
    assert secret not in text


def test_decision_id_and_latency_at_debug(rego_dir, fake_opa, caplog):
    server = fake_opa()
    drv = driver(rego_dir, server.url)
    try:
        with caplog.at_level(logging.DEBUG, logger='oslo_opa'):
            ask(drv, 'admin_required', ADMIN)
    finally:
        drv.close()
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG]
    assert any(
        'decision_id dec-' in r.getMessage() and ' ms ' in r.getMessage()
        for r in debug
    ), [r.getMessage() for r in debug]


# --- faults: each denies within the timeout, nothing hangs, recovery ---------


@pytest.mark.parametrize('mode', ['hang', 'reset', 'garbage', 'refused'])
def test_fault_denies_in_time_opens_circuit_and_recovers(
    rego_dir, fake_opa, caplog, mode
):
    if mode == 'refused':
        # Nothing listens there yet; OPA "starts" later on that port.
        port = free_port()
        url = f'http://127.0.0.1:{port}'
        server = None
    else:
        server = fake_opa(mode)
        url = server.url
    d = decider.load(
        rego_dir,
        driver='http',
        cache_size=0,
        opa_url=url,
        opa_read_timeout=0.3,
        opa_connect_timeout=0.3,
        opa_circuit_breaker_interval=0.4,
        opa_warm_up=False,
    )
    try:
        start = time.monotonic()
        with caplog.at_level(logging.ERROR, logger='oslo_opa'):
            assert d.decide('admin_required', {}, ADMIN) is False
        first = time.monotonic() - start
        assert first < 0.3 + 0.3 * 2 + SLACK, first
        assert d.driver.circuit_open
        assert any('not answering' in r.getMessage() for r in caplog.records)
        # While open: no request, no wait.
        seen = len(server.data_requests()) if server else 0
        start = time.monotonic()
        for _ in range(200):
            assert d.decide('admin_required', {}, ADMIN) is False
        assert time.monotonic() - start < SLACK
        if server:
            # Only the background probe may have asked meanwhile.
            assert len(server.data_requests()) <= seen + 3
        # OPA comes back: decisions are right again, by themselves.
        if server:
            server.mode = 'ok'
        else:
            server = fake_opa(port=port)
        assert wait_for(lambda: not d.driver.circuit_open, 0.4 * 4 + SLACK)
        assert d.decide('admin_required', {}, ADMIN) is True
        assert d.decide('admin_required', {}, READER) is False
    finally:
        d.close()
    assert wait_for(lambda: not background_threads(), 2.0)


def test_nothing_is_retried_once_sent(rego_dir, fake_opa):
    for mode in ('reset', 'hang', 'garbage'):
        server = fake_opa(mode)
        drv = driver(rego_dir, server.url, opa_retries=5)
        try:
            with pytest.raises(DecisionError):
                ask(drv, 'admin_required', ADMIN)
        finally:
            drv.close()
        server.mode = 'ok'  # release a hanging handler
        assert len(server.data_requests()) == 1, mode


@contextlib.contextmanager
def full_backlog():
    """A port whose accept queue is full: connecting times out (SYN lost)."""
    srv = socket.socket()
    srv.bind(('127.0.0.1', 0))
    srv.listen(0)
    port = srv.getsockname()[1]
    fill = []
    try:
        for _ in range(4):
            c = socket.socket()
            c.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                c.connect(('127.0.0.1', port))
            fill.append(c)
        time.sleep(0.05)
        yield f'http://127.0.0.1:{port}'
    finally:
        for c in fill:
            c.close()
        srv.close()


@pytest.mark.parametrize('retries', [0, 2])
def test_connect_failures_are_retried_a_bounded_number_of_times(
    rego_dir, retries
):
    with full_backlog() as url:
        drv = driver(
            rego_dir, url, opa_retries=retries, opa_connect_timeout=0.2
        )
        try:
            start = time.monotonic()
            with pytest.raises(DecisionError, match='connecting timed out'):
                ask(drv, 'admin_required', ADMIN)
            elapsed = time.monotonic() - start
        finally:
            drv.close()
    # One connect timeout per attempt: 1 + retries of them, no more.
    assert 0.2 * (1 + retries) * 0.9 <= elapsed < 0.2 * (1 + retries) + SLACK
    assert Transport('http://127.0.0.1:1', retries=99).retries == 5


def test_an_outage_costs_one_timeout_per_interval_not_per_decision(
    rego_dir, fake_opa
):
    """8 threads decide against a hung server: bounded, then recovered."""
    server = fake_opa('hang')
    d = decider.load(
        rego_dir,
        driver='http',
        cache_size=0,
        opa_url=server.url,
        opa_read_timeout=0.3,
        opa_circuit_breaker_interval=0.5,
        opa_warm_up=False,
    )
    errors = []
    times = []

    def work():
        try:
            for _ in range(50):
                start = time.monotonic()
                d.decide('admin_required', {}, ADMIN)
                times.append(time.monotonic() - start)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, daemon=True) for _ in range(8)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    wall = time.monotonic() - start
    try:
        assert not any(t.is_alive() for t in threads), 'a thread hangs'
        assert not errors
        # 400 decisions; only those in flight when it broke waited.
        slow = [x for x in times if x > 0.2]
        assert len(slow) <= 8 + 2, len(slow)
        assert wall < 0.3 * 3 + SLACK * 2, wall
        # The server saw a handful of requests, not 400.
        assert len(server.data_requests()) <= 8 + 6
        server.mode = 'ok'
        assert wait_for(lambda: not d.driver.circuit_open, 0.5 * 3 + SLACK)
        assert d.decide('admin_required', {}, ADMIN) is True
    finally:
        d.close()


def test_breaker_disabled_asks_every_time(rego_dir, fake_opa):
    server = fake_opa('reset')
    drv = driver(rego_dir, server.url, opa_circuit_breaker_interval=0)
    try:
        for _ in range(5):
            with pytest.raises(DecisionError, match='connection broken'):
                ask(drv, 'admin_required', ADMIN)
        assert not drv.circuit_open
    finally:
        drv.close()
    assert len(server.data_requests()) == 5


# What the warm-up asks besides the rules' paths.
OVERLAY_PROBE = '/v1/data/oslo_opa/overlay'

# --- warm-up, manifest changes, threads, connections -------------------------


def test_warm_up_asks_every_path_once_off_the_request_path(tmp_path, fake_opa):
    src = tmp_path / 'svc.yaml'
    src.write_text(json.dumps(RULES))
    out = str(tmp_path / PREFIX)
    convert(out, policy_files=[str(src)], package_prefix=PREFIX)
    server = fake_opa()
    drv = driver(out, server.url, opa_warm_up=True, reload_interval=0)
    try:
        assert drv.wait_warm_up(5)
        paths = [r[1].split('?')[0] for r in server.data_requests()]
        expected = sorted(
            f'/v1/data/{e.path}' for e in drv.manifest.rules.values()
        )
        # And whether OPA holds overlays overlay_path does not name.
        assert paths.count(OVERLAY_PROBE) == 1
        assert sorted(p for p in paths if p != OVERLAY_PROBE) == expected
        assert wait_for(lambda: not background_threads(), 2.0)
        generation = drv.generation
        # A new conversion: a new rule; the manifest changes on disk.
        src.write_text(json.dumps({**RULES, 'added': 'role:x'}))
        convert(out, policy_files=[str(src)], package_prefix=PREFIX)
        assert ask(drv, 'added', {'roles': ['x']}) is True
        assert drv.generation == generation + 1
        assert drv.wait_warm_up(5)
        later = [r[1].split('?')[0] for r in server.data_requests()]
        assert '/v1/data/svc/added/allow' in later
        assert wait_for(lambda: not background_threads(), 2.0)
    finally:
        drv.close()


def test_opa_restart_noticed_on_idle_connections_warms_up_again(
    rego_dir, fake_opa
):
    first = fake_opa()
    port = int(first.url.rsplit(':', 1)[1])
    drv = driver(rego_dir, first.url, opa_warm_up=True)
    try:
        assert drv.wait_warm_up(5)
        assert ask(drv, 'admin_required', ADMIN) is True
        first.stop()  # closes its connections: OPA went away
        second = fake_opa(port=port)
        # Between two decisions: nothing failed, the pool reconnects.
        assert ask(drv, 'admin_required', ADMIN) is True
        assert not drv.circuit_open
        assert drv.transport.num_dropped >= 1
        assert drv.wait_warm_up(5)
        warmed = {r[1].split('?')[0] for r in second.data_requests()}
        assert warmed - {OVERLAY_PROBE} == {
            f'/v1/data/{e.path}' for e in drv.manifest.rules.values()
        }
    finally:
        drv.close()


def test_warm_up_against_no_server_opens_circuit_quietly(rego_dir, caplog):
    url = f'http://127.0.0.1:{free_port()}'
    with caplog.at_level(logging.ERROR, logger='oslo_opa'):
        drv = driver(rego_dir, url, opa_warm_up=True)
        try:
            assert wait_for(lambda: drv.circuit_open, 3)
            with pytest.raises(DecisionError, match='not answering'):
                ask(drv, 'admin_required', ADMIN)
        finally:
            drv.close()
    assert len(caplog.records) == 1
    assert wait_for(lambda: not background_threads(), 2.0)


def test_threads_share_the_pool_and_leak_nothing(rego_dir, fake_opa):
    server = fake_opa()
    before = open_fds()
    drv = driver(rego_dir, server.url, opa_max_connections=8)
    errors = []
    wrong = []

    def work(i):
        creds = ADMIN if i % 2 else READER
        try:
            for _ in range(250):
                if ask(drv, 'admin_required', creds) != bool(i % 2):
                    wrong.append(i)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [
        threading.Thread(target=work, args=(i,), daemon=True) for i in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert not errors and not wrong
    assert server.connections <= 8
    drv.close()
    assert wait_for(lambda: open_fds() <= before, 2.0), (before, open_fds())


def test_closed_driver_fails_fast(rego_dir, fake_opa):
    server = fake_opa()
    drv = driver(rego_dir, server.url)
    drv.close()
    with pytest.raises(DecisionError, match='closed'):
        ask(drv, 'admin_required', ADMIN)


def test_unknown_rule_and_missing_manifest(rego_dir, fake_opa, tmp_path):
    server = fake_opa()
    drv = driver(rego_dir, server.url)
    try:
        with pytest.raises(DecisionError, match='not in'):
            drv.input_for('nope', ADMIN, {})
    finally:
        drv.close()
    drv = driver(str(tmp_path), server.url)
    try:
        with pytest.raises(DecisionError, match='manifest.json'):
            drv.input_for('admin_required', ADMIN, {})
    finally:
        drv.close()


# --- configuration -----------------------------------------------------------


@pytest.mark.parametrize(
    ('options', 'message'),
    [
        ({'opa_url': 'ftp://127.0.0.1:21'}, 'expected http://'),
        ({'opa_url': 'unix://relative.sock'}, 'unix:///absolute'),
        ({'opa_url': 'http://127.0.0.1:99999'}, 'bad port'),
        (
            {'opa_url': 'http://127.0.0.1:1', 'opa_ca_file': '/x.pem'},
            'not https',
        ),
        (
            {'opa_url': 'https://127.0.0.1:1', 'opa_ca_file': '/nope.pem'},
            'cannot load',
        ),
        (
            {'opa_url': 'https://127.0.0.1:1', 'opa_key_file': '/k.pem'},
            'without opa_cert_file',
        ),
    ],
)
def test_bad_options_deny_and_log_once(rego_dir, caplog, options, message):
    with caplog.at_level(logging.ERROR, logger='oslo_opa'):
        d = decider.load(rego_dir, driver='http', **options)
        assert d.driver is None
        assert d.decide('admin_required', {}, ADMIN) is False
    assert message in caplog.records[0].getMessage()
    assert 'failed to start' in caplog.records[0].getMessage()


def test_rego_path_is_required():
    with pytest.raises(PolicyLoadError, match='rego_path'):
        HttpDriver(Settings(options={'opa_url': 'http://127.0.0.1:1'}))


def _enforcer(rego_path, **overrides):
    conf = cfg.ConfigOpts()
    conf(args=[], default_config_files=[])
    enf = oslo_policy.Enforcer(
        conf, policy_file=os.path.join(rego_path, 'policy.yaml')
    )
    conf.set_override('policy_dirs', [], 'oslo_policy')
    opts.register_opts(conf)
    conf.set_override('rego_path', rego_path, 'oslo_opa')
    for name, value in overrides.items():
        conf.set_override(name, value, 'oslo_opa')
    enf.load_rules()
    return enf


def test_configured_through_oslo_config(rego_dir, fake_opa, tmp_path):
    server = fake_opa(unix_path=str(tmp_path / 'opa.sock'))
    enf = _enforcer(
        rego_dir,
        driver='http',
        opa_url=server.url,
        opa_read_timeout=0.2,
        opa_warm_up=False,
    )
    assert enf.enforce('admin_or_owner', {'project_id': 'p2'}, READER)
    assert not enf.enforce('admin_or_owner', {'project_id': 'p1'}, READER)
    drv = check.decider_for(enf.conf).driver
    assert isinstance(drv, HttpDriver)
    assert drv.transport.read_timeout == 0.2


@pytest.mark.parametrize('mode', ['fallback', 'embedded'])
def test_failure_modes_decide_while_opa_is_down(rego_dir, mode, caplog):
    url = f'http://127.0.0.1:{free_port()}'
    enf = _enforcer(
        rego_dir,
        driver='http',
        opa_url=url,
        failure_mode=mode,
        cache_size=0,
        opa_warm_up=False,
    )
    with caplog.at_level(logging.WARNING, logger='oslo_opa'):
        assert enf.enforce('admin_or_owner', {'project_id': 'p1'}, ADMIN)
        assert enf.enforce('admin_or_owner', {'project_id': 'p2'}, READER)
        assert not enf.enforce('admin_or_owner', {'project_id': 'p1'}, READER)
    said = 'embedded driver' if mode == 'embedded' else 'check string'
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3
    assert all(said in r.getMessage() for r in warnings)
    if mode == 'embedded':
        d = check.decider_for(enf.conf)
        assert type(d.fallback_driver).__name__ == 'EmbeddedDriver'


# --- oslo-opa bundle ---------------------------------------------------------


def _members(path):
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def test_bundle_is_reproducible_with_revision_and_roots(
    rego_dir, tmp_path, capsys
):
    first, second = tmp_path / 'a.tar.gz', tmp_path / 'b.tar.gz'
    assert cli.main(['bundle', rego_dir, '-o', str(first)]) == 0
    assert 'revision svc-' in capsys.readouterr().out
    assert cli.main(['bundle', rego_dir, '-o', str(second)]) == 0
    assert first.read_bytes() == second.read_bytes()
    with gzip.open(first) as gz:
        assert gz.read(1)  # a gzip stream
    files = _members(first)
    manifest = json.loads(files['.manifest'])
    assert manifest['roots'] == ['oslo_opa/batch/svc', 'oslo_opa/lib', 'svc']
    assert manifest['revision'].startswith('svc-')
    assert 'svc/admin_required.rego' in files
    assert 'oslo_opa/lib.rego' in files
    assert not any(n.endswith('_test.rego') for n in files)
    # manifest.json is for embedded drivers polling the bundle (OPA
    # ignores it); the delegation file stays with the service.
    assert 'manifest.json' in files
    assert not any(n.endswith('policy.yaml') for n in files)


def test_bundle_library_modes_and_data(rego_dir, tmp_path, capsys):
    data = tmp_path / 'data.yaml'
    data.write_text('relations: {a: [b]}\n')
    out = tmp_path / 'svc.tar.gz'
    lib = tmp_path / 'lib.tar.gz'
    assert (
        cli.main(
            [
                'bundle',
                rego_dir,
                '-o',
                str(out),
                '--library',
                'exclude',
                '--data',
                str(data),
            ]
        )
        == 0
    )
    assert (
        cli.main(['bundle', rego_dir, '-o', str(lib), '--library', 'only'])
        == 0
    )
    files = _members(out)
    assert json.loads(files['.manifest'])['roots'] == [
        'oslo_opa/batch/svc',
        'relations',
        'svc',
    ]
    assert json.loads(files['data.json']) == {'relations': {'a': ['b']}}
    assert not any(n.startswith('oslo_opa/') for n in files)
    lib_files = _members(lib)
    assert json.loads(lib_files['.manifest'])['roots'] == ['oslo_opa/lib']
    library = bundle.manifest_mod.load(rego_dir).library
    assert 'oslo_opa/lib.rego' in library
    assert set(lib_files) == {'.manifest', *library}


def test_bundle_refuses_a_directory_that_does_not_compile(
    rego_dir, tmp_path, capsys
):
    broken = tmp_path / 'broken'
    shutil.copytree(rego_dir, broken)
    (broken / 'svc' / 'solo.rego').write_text('package svc.solo\n\nallow if {')
    out = tmp_path / 'x.tar.gz'
    assert cli.main(['bundle', str(broken), '-o', str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith('oslo-opa: error:') and 'does not compile' in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()
    assert cli.main(['bundle', str(tmp_path / 'nope'), '-o', str(out)]) == 2


# --- oslo-opa status / push against misbehaving servers ----------------------


def test_status_and_push_exit_codes_without_opa(rego_dir, fake_opa, capsys):
    url = f'http://127.0.0.1:{free_port()}'
    assert cli.main(['status', '--opa-url', url, '--timeout', '1']) == 1
    assert 'cannot connect' in capsys.readouterr().err
    assert (
        cli.main(['push', rego_dir, '--opa-url', url, '--timeout', '1']) == 1
    )
    assert 'cannot connect' in capsys.readouterr().err
    server = fake_opa('undefined')
    # Healthy, but no rule resolves.
    assert cli.main(['status', rego_dir, '--opa-url', server.url]) == 1
    out = capsys.readouterr().out
    assert 'rules resolved: 0/4' in out
    server.mode = 'ok'
    assert cli.main(['status', rego_dir, '--opa-url', server.url]) == 0
    assert 'rules resolved: 4/4' in capsys.readouterr().out
    assert cli.main(['status', '--opa-url', 'ftp://x']) == 2
    assert cli.main(['status', '--timeout', '0']) == 2
    assert capsys.readouterr().err.count('\n') == 2


# --- eventlet ----------------------------------------------------------------

EVENTLET_SCRIPT = """
import json, sys, time, warnings
warnings.simplefilter('ignore')
import eventlet
eventlet.monkey_patch()
import select
from oslo_opa import decider

rego_dir, url, hang_url = sys.argv[1:4]
d = decider.load(rego_dir, driver='http', cache_size=0, opa_url=url,
                 opa_warm_up=False)
admin = {'roles': ['admin'], 'project_id': 'p1'}
reader = {'roles': ['reader'], 'project_id': 'p2'}
wrong = []

def work(i):
    creds = admin if i % 2 else reader
    for _ in range(40):
        if d.decide('admin_required', {}, creds) != bool(i % 2):
            wrong.append(i)

pool = eventlet.GreenPool(20)
for i in range(20):
    pool.spawn(work, i)
pool.waitall()
h = decider.load(rego_dir, driver='http', cache_size=0, opa_url=hang_url,
                 opa_read_timeout=0.3, opa_warm_up=False)
start = time.monotonic()
hung = [h.decide('admin_required', {}, admin) for _ in range(20)]
print(json.dumps({
    'wrong': len(wrong),
    'connections': d.driver.transport.num_connections,
    'poll': hasattr(select, 'poll'),
    'hung_allowed': sum(hung),
    'hung_seconds': time.monotonic() - start,
}))
d.close()
h.close()
"""


def test_under_eventlet(rego_dir, fake_opa):
    pytest.importorskip('eventlet')
    server = fake_opa()
    hanging = fake_opa('hang')
    proc = subprocess.run(
        [sys.executable, '-c', EVENTLET_SCRIPT, rego_dir, server.url,
         hanging.url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result['wrong'] == 0
    assert not result['poll']  # eventlet removes select.poll
    # 20 greenthreads, one pool: at most one connection each.
    assert result['connections'] <= 20
    # One read timeout, then the open circuit: no waiting.
    assert result['hung_allowed'] == 0
    assert result['hung_seconds'] < 0.3 + SLACK
