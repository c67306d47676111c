"""The http driver against the real OPA, run as a sidecar would run it.

``opa run --server`` (the binary ``tools/install-opa.sh`` builds) on a
free loopback port, on a unix socket, with TLS and with mutual TLS
(certificates made in the test with the ``openssl`` command), loaded with
bundles written by ``oslo-opa bundle`` or modules uploaded by ``oslo-opa
push``.  Then:

* the end-to-end differential test of ``tests/unit/test_delegation_e2e``
  through oslo.policy: an Enforcer on each corpus service's policy file
  against one on its delegation file with ``[oslo_opa] driver = http``:
  100% agreement, and no decision failed;
* faults: OPA not started yet, OPA killed mid-run (SIGKILL) and
  restarted: decisions deny (or, with ``failure_mode = embedded``, stay
  right) within the configured timeouts, no thread hangs, and decisions
  are right again by themselves once OPA is back;
* load: 8 threads x 5,000 decisions, all right, no leaked sockets;
* warm-up: once the driver has warmed up, OPA answers every rule's path
  from its prepared-query cache;
* ``oslo-opa status`` and ``oslo-opa push`` (all or nothing).

The misbehaving servers that are not OPA (hanging, resetting, garbage,
500) are in ``tests/unit/test_http_driver.py``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import threading
import time

import pytest

from oslo_opa import bundle, check, cli, decider, opa_push
from oslo_opa.convert import convert, load_rule_table
from oslo_opa.drivers.http import HttpDriver, Transport, TransportError
from tests import corpus
from tests.processes import free_port
from tests.unit.test_delegation_e2e import compare, enforcer, outcome

START_TIMEOUT = 60.0
# A small service and a mid-sized one for the transport variants.
SMALL = 'placement'
MEDIUM = 'glance'


@pytest.fixture(autouse=True)
def _fresh_deciders():
    check.reset()
    yield
    check.reset()


# --- running OPA -------------------------------------------------------------


class Opa:
    """``opa run --server``, stopped when the test ends."""

    def __init__(
        self,
        opa_bin,
        workdir,
        bundles=(),
        unix=False,
        tls=None,
        mtls=False,
        port=None,
        extra_args=(),
    ):
        self.opa_bin = opa_bin
        self.workdir = str(workdir)
        self.bundles = list(bundles)
        self.tls = tls
        self.mtls = mtls
        self.extra_args = list(extra_args)
        if unix:
            self.socket_path = os.path.join(self.workdir, 'opa.sock')
            self.addr = f'unix://{self.socket_path}'
            self.url = f'unix://{self.socket_path}'
        else:
            self.port = port or free_port()
            self.addr = f'127.0.0.1:{self.port}'
            scheme = 'https' if tls else 'http'
            self.url = f'{scheme}://127.0.0.1:{self.port}'
        self.proc = None
        self.log = os.path.join(self.workdir, f'opa-{id(self)}.log')

    def client_options(self):
        """The driver options that reach this OPA."""
        out = {'opa_url': self.url}
        if self.tls:
            out['opa_ca_file'] = self.tls['ca']
            if self.mtls:
                out['opa_cert_file'] = self.tls['client']
                out['opa_key_file'] = self.tls['client_key']
        return out

    def cli_args(self):
        args = ['--opa-url', self.url, '--timeout', '30']
        if self.tls:
            args += ['--ca-file', self.tls['ca']]
            if self.mtls:
                args += [
                    '--cert-file',
                    self.tls['client'],
                    '--key-file',
                    self.tls['client_key'],
                ]
        return args

    def transport(self, **kw):
        opts = self.client_options()
        return Transport(
            opts['opa_url'],
            connect_timeout=2.0,
            read_timeout=30.0,
            ca_file=opts.get('opa_ca_file'),
            cert_file=opts.get('opa_cert_file'),
            key_file=opts.get('opa_key_file'),
            **kw,
        )

    def start(self):
        cmd = [
            self.opa_bin,
            'run',
            '--server',
            '--addr',
            self.addr,
            '--log-level',
            'error',
            '--skip-version-check',
            '--shutdown-grace-period',
            '1',
        ]
        if self.tls:
            cmd += [
                '--tls-cert-file',
                self.tls['server'],
                '--tls-private-key-file',
                self.tls['server_key'],
            ]
            if self.mtls:
                cmd += [
                    '--tls-ca-cert-file',
                    self.tls['ca'],
                    '--authentication',
                    'tls',
                ]
        cmd += self.extra_args
        if self.bundles:
            cmd += ['--bundle', *self.bundles]
        with open(self.log, 'ab') as log:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        client = self.transport(tls_verify=False)
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    with open(self.log) as f:
                        pytest.fail(f'opa exited: {f.read()[-2000:]}')
                try:
                    status, _ = client.request('GET', '/health?bundles')
                    if status == 200:
                        return self
                except TransportError:
                    pass
                time.sleep(0.05)
        finally:
            client.close()
        pytest.fail(f'opa did not become healthy in {START_TIMEOUT}s')

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        if getattr(self, 'socket_path', None):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.socket_path)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()
        self.kill()


@pytest.fixture
def run_opa(opa_bin, tmp_path):
    """run_opa(bundles=..., unix=..., tls=..., mtls=...) -> started Opa."""
    started = []

    def start(**kw):
        opa = Opa(opa_bin, tmp_path, **kw)
        started.append(opa)
        return opa.start()

    yield start
    for opa in started:
        opa.stop()


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
    """Every corpus service converted, and its bundles."""
    root = tmp_path_factory.mktemp('sidecar')
    out = {}
    for service in corpus.SERVICES:
        directory = str(root / service)
        convert(directory, policy_files=[corpus.policy_file(service)])
        out[service] = directory
    return root, out


def service_bundle(converted, service, library='include'):
    root, dirs = converted
    path = str(root / f'{service}-{library}.tar.gz')
    if not os.path.exists(path):
        bundle.build(dirs[service], path, library=library)
    return path


def library_bundle(converted):
    root, dirs = converted
    path = str(root / 'library.tar.gz')
    if not os.path.exists(path):
        bundle.build(dirs[SMALL], path, library='only', validate=False)
    return path


def delegated_enforcer(directory, service, opa, **overrides):
    enf = enforcer(
        os.path.join(directory, 'policy.yaml'), service, rego_path=directory
    )
    settings = {
        'driver': 'http',
        'opa_read_timeout': 5.0,
        'opa_connect_timeout': 2.0,
        **opa.client_options(),
        **overrides,
    }
    for name, value in settings.items():
        enf.conf.set_override(name, value, 'oslo_opa')
    return enf


def assert_agrees(directory, service, opa, caplog, **overrides):
    """The e2e differential test through oslo.policy, over this OPA."""
    original = enforcer(corpus.policy_file(service), service)
    delegated = delegated_enforcer(directory, service, opa, **overrides)
    table = load_rule_table(policy_files=[corpus.policy_file(service)])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger='oslo_opa'):
        mismatches, outcomes = compare(original, delegated, table, service)
    assert not mismatches, mismatches[:10]
    assert {'True', 'False'} <= outcomes
    # Every decision came from OPA: none failed over to failure_mode.
    failed = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith('oslo_opa') and r.levelno >= logging.WARNING
    ]
    assert not failed, failed[:5]
    drv = check.decider_for(delegated.conf).driver
    assert isinstance(drv, HttpDriver)
    return drv


# --- the e2e differential test, over TCP, a unix socket, TLS, mTLS -----------


@pytest.fixture(scope='module')
def corpus_opa(opa_bin, converted, tmp_path_factory):
    """One OPA serving every service: its bundle each, the library once."""
    bundles = [library_bundle(converted)] + [
        service_bundle(converted, s, 'exclude') for s in corpus.SERVICES
    ]
    opa = Opa(opa_bin, tmp_path_factory.mktemp('opa'), bundles=bundles)
    opa.start()
    yield opa
    opa.stop()


@pytest.mark.parametrize('service', corpus.SERVICES)
def test_delegation_over_http_agrees_with_oslo_policy(
    corpus_opa, converted, service, caplog, capsys
):
    _, dirs = converted
    drv = assert_agrees(dirs[service], service, corpus_opa, caplog)
    # The decisions' connection, and the warm-up's.
    assert drv.transport.num_connections <= 2
    # oslo-opa status: healthy, the revisions, every rule resolves.
    code = cli.main(['status', dirs[service], *corpus_opa.cli_args()])
    out = capsys.readouterr().out
    assert code == 0, out
    rules = len(drv.manifest.rules)
    assert f'rules resolved: {rules}/{rules}' in out
    # Which of the directory's two revisions OPA runs, and what each is.
    assert 'OPA runs it; revisions: ' in out and out.count('(loaded)') == 1
    assert 'its bundle with the helper library' in out
    assert 'without it (--library exclude' in out
    assert 'revision oslo_opa-lib-' in out


def test_unix_socket(run_opa, converted, caplog, capsys):
    opa = run_opa(bundles=[service_bundle(converted, SMALL)], unix=True)
    _, dirs = converted
    assert_agrees(dirs[SMALL], SMALL, opa, caplog)
    assert cli.main(['status', dirs[SMALL], *opa.cli_args()]) == 0
    assert 'rules resolved: ' in capsys.readouterr().out


def _openssl(*args, cwd):
    subprocess.run(
        ['openssl', *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope='module')
def certs(tmp_path_factory):
    """A CA, a server certificate for 127.0.0.1 and a client certificate."""
    if not shutil.which('openssl'):
        pytest.skip('the openssl command is needed to make certificates')
    d = tmp_path_factory.mktemp('pki')
    ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1']
    _openssl(
        'req', '-x509', *ec, '-nodes', '-keyout', 'ca.key', '-out',
        'ca.pem', '-days', '2', '-subj', '/CN=oslo-opa test CA',
        '-addext', 'basicConstraints=critical,CA:TRUE',
        '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
        cwd=d,
    )  # fmt: skip
    for name, ext in (
        (
            'server',
            'subjectAltName=IP:127.0.0.1,DNS:localhost\n'
            'extendedKeyUsage=serverAuth\n',
        ),
        ('client', 'extendedKeyUsage=clientAuth\n'),
        ('other', 'subjectAltName=DNS:elsewhere.example\n'),
    ):
        (d / f'{name}.ext').write_text(ext)
        _openssl(
            'req', *ec, '-nodes', '-keyout', f'{name}.key', '-out',
            f'{name}.csr', '-subj', f'/CN={name}', cwd=d,
        )  # fmt: skip
        _openssl(
            'x509', '-req', '-in', f'{name}.csr', '-CA', 'ca.pem',
            '-CAkey', 'ca.key', '-CAcreateserial', '-out', f'{name}.pem',
            '-days', '2', '-extfile', f'{name}.ext', cwd=d,
        )  # fmt: skip
    return {
        'ca': str(d / 'ca.pem'),
        'server': str(d / 'server.pem'),
        'server_key': str(d / 'server.key'),
        'client': str(d / 'client.pem'),
        'client_key': str(d / 'client.key'),
        'other': str(d / 'other.pem'),
        'other_key': str(d / 'other.key'),
    }


def _one_decision_fails(directory, opa, caplog, message, **options):
    d = decider.load(
        directory,
        driver='http',
        cache_size=0,
        opa_warm_up=False,
        **{**opa.client_options(), **options},
    )
    try:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger='oslo_opa'):
            assert (
                d.decide(
                    'placement:resource_providers:list',
                    {},
                    {'roles': ['admin'], 'system_scope': 'all'},
                )
                is False
            )
        text = '\n'.join(r.getMessage() for r in caplog.records)
        assert message in text, text
    finally:
        d.close()


def test_tls(run_opa, converted, certs, caplog):
    opa = run_opa(bundles=[service_bundle(converted, SMALL)], tls=certs)
    _, dirs = converted
    drv = assert_agrees(dirs[SMALL], SMALL, opa, caplog)
    # TLS connections are kept alive too (decisions', warm-up's).
    assert drv.transport.num_connections <= 2
    # Verification is on by default: without the CA, no decision.
    _one_decision_fails(
        dirs[SMALL], opa, caplog, 'TLS failed', opa_ca_file=None
    )


def test_tls_host_name_is_verified(run_opa, converted, certs, caplog):
    opa = run_opa(
        bundles=[service_bundle(converted, SMALL)],
        tls={
            **certs,
            'server': certs['other'],
            'server_key': certs['other_key'],
        },
    )
    _, dirs = converted
    # Signed by the trusted CA, but for another host name.
    _one_decision_fails(dirs[SMALL], opa, caplog, 'TLS failed')


def test_mutual_tls(run_opa, converted, certs, caplog):
    opa = run_opa(
        bundles=[service_bundle(converted, MEDIUM)], tls=certs, mtls=True
    )
    _, dirs = converted
    drv = assert_agrees(dirs[MEDIUM], MEDIUM, opa, caplog)
    assert drv.transport.num_connections <= 2
    # Without a client certificate OPA refuses the connection.
    d = decider.load(
        dirs[MEDIUM],
        driver='http',
        cache_size=0,
        opa_warm_up=False,
        opa_url=opa.url,
        opa_ca_file=certs['ca'],
    )
    try:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger='oslo_opa'):
            assert not d.decide('get_images', {}, {'roles': ['admin']})
        assert "rule 'get_images'" in caplog.text
    finally:
        d.close()


# --- faults with the real OPA ------------------------------------------------


def _cases(service, count, seed=1):
    """(rule, creds, target, oslo.policy's decision) for service."""
    table = load_rule_table(policy_files=[corpus.policy_file(service)])
    original = enforcer(corpus.policy_file(service), service)
    rng = random.Random(seed)
    rules = sorted(table.rules)
    from oslo_opa import probe

    out = []
    while len(out) < count:
        rule = rng.choice(rules)
        leaves = probe.collect(table.rules, rule, table.default_rule)
        gen = probe.InputGenerator(leaves, seed=f'{seed}:{rule}:{len(out)}')
        for creds, target in gen.inputs(2):
            want = outcome(original, rule, creds, target)
            if isinstance(want, bool):
                out.append((rule, creds, target, want))
    return out[:count]


def test_opa_not_started_yet_then_started(run_opa, converted, caplog):
    _, dirs = converted
    port = free_port()
    cases = _cases(SMALL, 40)
    d = decider.load(
        dirs[SMALL],
        driver='http',
        cache_size=0,
        opa_url=f'http://127.0.0.1:{port}',
        opa_read_timeout=0.5,
        opa_connect_timeout=0.25,
        opa_circuit_breaker_interval=0.5,
    )
    try:
        start = time.monotonic()
        with caplog.at_level(logging.WARNING, logger='oslo_opa'):
            for rule, creds, target, _want in cases:
                assert d.decide(rule, target, creds) is False
        # Refused at once; then the open circuit: no waiting at all.
        assert time.monotonic() - start < 2.0
        assert d.driver.circuit_open
        assert sum('denying' in r.getMessage() for r in caplog.records) == 40
        run_opa(bundles=[service_bundle(converted, SMALL)], port=port)
        deadline = time.monotonic() + 0.5 + 5.0
        while d.driver.circuit_open and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not d.driver.circuit_open
        assert d.driver.wait_warm_up(30)
        for rule, creds, target, want in cases:
            assert d.decide(rule, target, creds) is want
    finally:
        d.close()


@pytest.mark.parametrize('failure_mode', ['deny', 'embedded'])
def test_opa_killed_mid_run_and_restarted(run_opa, converted, failure_mode):
    """4 threads decide while OPA is SIGKILLed and started again."""
    _, dirs = converted
    service = SMALL
    cases = _cases(service, 60)
    opa = run_opa(bundles=[service_bundle(converted, service)])
    d = decider.load(
        dirs[service],
        driver='http',
        cache_size=0,
        failure_mode=failure_mode,
        opa_read_timeout=0.5,
        opa_connect_timeout=0.25,
        opa_circuit_breaker_interval=0.5,
        **opa.client_options(),
    )
    stop = threading.Event()
    wrong, slow, errors = [], [], []
    counts = [0] * 4

    def work(n):
        rng = random.Random(n)
        try:
            # Bounded in count and in time.
            deadline = time.monotonic() + 60
            while not stop.is_set() and counts[n] < 20000:
                if time.monotonic() > deadline:
                    break
                rule, creds, target, want = rng.choice(cases)
                t0 = time.monotonic()
                got = d.decide(rule, target, creds)
                took = time.monotonic() - t0
                counts[n] += 1
                if took > 0.25 * 2 + 0.5 + 1.0:
                    slow.append(took)
                # deny may deny a true allow while OPA is down; nothing
                # may ever allow what oslo.policy denies.
                if got != want and (failure_mode != 'deny' or got):
                    wrong.append((rule, want, got))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [
        threading.Thread(target=work, args=(n,), daemon=True) for n in range(4)
    ]
    try:
        assert d.driver.wait_warm_up(30)
        for t in threads:
            t.start()
        time.sleep(0.5)
        opa.kill()
        time.sleep(1.0)
        assert d.driver.circuit_open
        during = sum(counts)
        time.sleep(0.5)
        # Decisions go on while OPA is down (fast, no request).
        assert sum(counts) > during
        restarted = run_opa(
            bundles=[service_bundle(converted, service)], port=opa.port
        )
        deadline = time.monotonic() + 10
        while d.driver.circuit_open and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not d.driver.circuit_open
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(timeout=10)
        assert not any(t.is_alive() for t in threads), 'a thread hangs'
        assert not errors, errors[:3]
        assert not wrong, wrong[:10]
        assert not slow, slow[:10]
        # Right again, from OPA itself.
        for rule, creds, target, want in cases:
            assert d.decide(rule, target, creds) is want
        assert not d.driver.circuit_open
        assert restarted.proc.poll() is None
    finally:
        stop.set()
        d.close()


# --- load and warm-up --------------------------------------------------------


def _sockets() -> int:
    count = 0
    for fd in os.listdir('/proc/self/fd'):
        with contextlib.suppress(OSError):
            if os.readlink(f'/proc/self/fd/{fd}').startswith('socket:'):
                count += 1
    return count


def test_load_8_threads_by_5000_decisions(run_opa, converted):
    service = 'nova'
    _, dirs = converted
    cases = _cases(service, 300)
    opa = run_opa(bundles=[service_bundle(converted, service)])
    before = _sockets()
    d = decider.load(
        dirs[service],
        driver='http',
        cache_size=0,
        opa_read_timeout=5.0,
        **opa.client_options(),
    )
    wrong, errors = [], []
    peak = [0]

    def work(n):
        rng = random.Random(n)
        try:
            for i in range(5000):
                rule, creds, target, want = rng.choice(cases)
                if d.decide(rule, target, creds) is not want:
                    wrong.append((rule, want))
                if i % 500 == 0:
                    peak[0] = max(peak[0], _sockets())
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [
        threading.Thread(target=work, args=(n,), daemon=True) for n in range(8)
    ]
    start = time.monotonic()
    with contextlib.ExitStack() as stack:
        stack.callback(d.close)
        failures = []
        handler = logging.Handler()
        handler.emit = lambda r: failures.append(r.getMessage())
        logging.getLogger('oslo_opa').addHandler(handler)
        stack.callback(logging.getLogger('oslo_opa').removeHandler, handler)
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=150)
        elapsed = time.monotonic() - start
        assert not any(t.is_alive() for t in threads)
        assert not errors, errors[:3]
        assert not wrong, wrong[:10]
        assert not [f for f in failures if 'denying' in f], failures[:5]
        pool = d.driver.transport
        # One pool for all threads: one connection per thread at most,
        # and the warm-up's.
        assert pool.num_connections <= 8 + 1
        assert peak[0] <= before + 8 + 1
    assert _sockets() == before
    print(f'40000 decisions in {elapsed:.1f}s ({40000 / elapsed:.0f}/s)')


def test_warm_up_prepares_every_path_in_opa(run_opa, converted):
    service = SMALL  # fewer than OPA's 100 prepared queries
    _, dirs = converted
    opa = run_opa(bundles=[service_bundle(converted, service)])
    d = decider.load(dirs[service], driver='http', **opa.client_options())
    client = opa.transport()
    try:
        assert d.driver.wait_warm_up(30)
        misses = []
        for name, entry in d.driver.manifest.rules.items():
            body = json.dumps(
                {'input': {'credentials': {}, 'target': {}, 'rule': name}}
            ).encode()
            status, data = client.request(
                'POST',
                f'/v1/data/{entry.path}?strict-builtin-errors&metrics',
                body,
            )
            assert status == 200
            metrics = json.loads(data)['metrics']
            if metrics.get('counter_server_query_cache_hit') != 1:
                misses.append(name)
        assert not misses, misses
    finally:
        client.close()
        d.close()


# --- oslo-opa push and status ------------------------------------------------


def _policies(opa):
    client = opa.transport()
    try:
        return opa_push.list_policies(client)
    finally:
        client.close()


def test_push_then_decide_then_push_again(run_opa, converted, caplog, capsys):
    _, dirs = converted
    opa = run_opa()
    code = cli.main(['push', dirs[SMALL], *opa.cli_args()])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert 'module(s) uploaded, 0 removed, 0 unchanged' in out
    assert cli.main(['status', dirs[SMALL], *opa.cli_args()]) == 0
    assert 'bundles: none' in capsys.readouterr().out
    assert_agrees(dirs[SMALL], SMALL, opa, caplog)
    # Again: nothing to upload.
    assert cli.main(['push', dirs[SMALL], *opa.cli_args()]) == 0
    assert '0 module(s) uploaded, 0 removed' in capsys.readouterr().out
    ids = set(_policies(opa))
    assert 'oslo_opa/library/oslo_opa/lib.rego' in ids
    assert all(
        i.startswith(('oslo_opa/placement/', 'oslo_opa/library/')) for i in ids
    )


def _write_policy(tmp_path, name, rules):
    path = tmp_path / name
    path.write_text(json.dumps(rules))
    return str(path)


def test_push_is_all_or_nothing(run_opa, tmp_path, capsys):
    """OPA refuses the last step: every step before it is undone."""
    v1 = {'a': 'role:a', 'b': 'role:b', 'gone': 'role:g', 'z': 'role:z'}
    out = str(tmp_path / 'svc')
    convert(out, policy_files=[_write_policy(tmp_path, 'v1.yaml', v1)],
            package_prefix='svc')  # fmt: skip
    # A hand-written module with a function another module will use.
    (tmp_path / 'svc' / 'helpers.rego').write_text(
        'package svc.helpers\n\nis_a(r) if r == "a"\n'
    )
    opa = run_opa()
    assert cli.main(['push', out, *opa.cli_args()]) == 0
    capsys.readouterr()
    # Someone else's module, through the Policy API, uses that function.
    client = opa.transport()
    try:
        status, data = client.request(
            'PUT',
            '/v1/policies/elsewhere',
            b'package elsewhere\n\nok if data.svc.helpers.is_a("a")\n',
            headers={'Content-Type': 'text/plain'},
        )
        assert status == 200, data
    finally:
        client.close()
    before = _policies(opa)
    # v2 changes rules and drops helpers.rego: the new modules upload,
    # then OPA refuses to delete helpers.rego (elsewhere needs it).
    v2 = {'a': 'role:A2', 'b': 'role:B2', 'new': 'role:n', 'z': 'role:z2'}
    convert(out, policy_files=[_write_policy(tmp_path, 'v2.yaml', v2)],
            package_prefix='svc')  # fmt: skip
    code = cli.main(['push', out, *opa.cli_args()])
    err = capsys.readouterr().err
    assert code == 1
    assert 'nothing changed' in err and 'step(s) undone' in err
    assert 'DELETE oslo_opa/svc/helpers.rego' in err
    assert len(err.strip().splitlines()) == 1
    assert _policies(opa) == before
    # A module that does not compile: refused before anything is sent.
    (tmp_path / 'svc' / 'svc' / 'a.rego').write_text(
        'package svc.a\nallow if {'
    )
    assert cli.main(['push', out, *opa.cli_args()]) == 2
    assert 'does not compile' in capsys.readouterr().err
    assert _policies(opa) == before


def test_push_refused_where_a_bundle_owns_the_path(run_opa, converted, capsys):
    _, dirs = converted
    opa = run_opa(bundles=[service_bundle(converted, SMALL)])
    before = _policies(opa)
    assert cli.main(['push', dirs[SMALL], *opa.cli_args()]) == 1
    err = capsys.readouterr().err
    assert 'owned by bundle' in err and 'nothing changed' in err
    # The bundle's own modules, and nothing else.
    assert _policies(opa) == before
    assert not any(i.startswith('oslo_opa/') for i in before)


def test_status_reports_what_is_missing(run_opa, converted, capsys):
    _, dirs = converted
    opa = run_opa(bundles=[service_bundle(converted, SMALL)])
    assert cli.main(['status', *opa.cli_args()]) == 0
    out = capsys.readouterr().out
    assert 'healthy' in out and 'revision placement-' in out
    # Another service's rules are not there.
    assert cli.main(['status', dirs[MEDIUM], *opa.cli_args()]) == 1
    out = capsys.readouterr().out
    assert 'rules resolved: 0/' in out and 'OPA runs neither revision' in out
    assert '(loaded)' not in out
    assert 'unresolved: ' in out


def test_verify_against_a_running_opa(run_opa, converted, capsys, tmp_path):
    """oslo-opa verify --opa-url: oslo.policy against what OPA holds."""
    _, dirs = converted
    policy = corpus.policy_file(SMALL)
    opa = run_opa()
    assert cli.main(['push', dirs[SMALL], *opa.cli_args()]) == 0
    capsys.readouterr()
    argv = ['verify', dirs[SMALL], '--policy-file', policy, '--inputs', '10']
    assert cli.main([*argv, '--opa-url', opa.url]) == 0
    assert '0 rules differ' in capsys.readouterr().out
    # OPA's copy of one rule changes; the directory's does not.
    edited = str(tmp_path / 'edited')
    shutil.copytree(dirs[SMALL], edited)
    manifest = json.loads((tmp_path / 'edited' / 'manifest.json').read_text())
    rule = next(r for r, e in manifest['rules'].items() if e['check_str'])
    entry = manifest['rules'][rule]
    (tmp_path / 'edited' / entry['module']).write_text(
        f'package {entry["package"]}\n\nallow := true\n'
    )
    os.unlink(tmp_path / 'edited' / entry['fast_module'])
    assert cli.main(['push', edited, *opa.cli_args()]) == 0
    capsys.readouterr()
    assert cli.main([*argv, '--opa-url', opa.url, '--format', 'json']) == 1
    report = json.loads(capsys.readouterr().out)
    assert [d['rule'] for d in report['differences']] == [rule]
    # No OPA there: an error, not a report of differences.
    opa.stop()
    assert cli.main([*argv, '--opa-url', opa.url]) == 2
    assert 'gave no decision' in capsys.readouterr().err
