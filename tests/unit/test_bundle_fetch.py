"""The embedded driver following a real bundle server (``bundle_url``).

Every test runs a real HTTP server (``tests/bundle_server.py``) in a
thread and the embedded driver's real polling thread; bundles are built
by ``oslo-opa bundle``'s code from real conversions and signed with
``bundle_signing``.  Revision 1 lets an admin get and delete things;
revision 2 only a superuser.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from oslo_opa import bundle, bundle_fetch, bundle_signing
from oslo_opa.drivers.base import DecisionError, Settings
from oslo_opa.drivers.embedded import EmbeddedDriver
from tests import policies
from tests.bundle_server import BundleServer

REV1 = policies.THINGS
REV2 = policies.THINGS.replace('role:admin', 'role:superuser')
ADMIN = {'roles': ['admin'], 'project_id': 'p1'}
TARGET = {'project_id': 'p2'}
LOG_NAME = 'oslo_opa.drivers.embedded'


def _pem(key, private: bool) -> bytes:
    if private:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    return key.public_key().public_bytes(
        serialization.Encoding.PEM,
        serialization.PublicFormat.SubjectPublicKeyInfo,
    )


@pytest.fixture(scope='module')
def built(tmp_path_factory):
    """Both revisions' bundle files, and two RSA key pairs."""
    out = {}
    for name, text in (('rev1', REV1), ('rev2', REV2)):
        work = tmp_path_factory.mktemp(name)
        directory = policies.converted(str(work), text)
        out[name] = bundle.bundle_files(directory)
    keys = tmp_path_factory.mktemp('keys')
    for name in ('good', 'other'):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        out[name] = _pem(key, True)
        (keys / f'{name}.pub').write_bytes(_pem(key, False))
    out['pub'] = str(keys / 'good.pub')
    return out


def _signed(files, private: bytes) -> bytes:
    files = dict(files)
    files['.signatures.json'] = bundle_signing.sign_files(files, private)
    return bundle.tarball(files)


@pytest.fixture
def server():
    srv = BundleServer()
    yield srv
    try:
        srv.stop()
    except OSError:
        pass


def _driver(server, tmp_path, key=None, interval=0.05, **extra):
    options = {
        'bundle_url': server.url,
        'bundle_cache_dir': str(tmp_path / 'cache'),
        'bundle_polling_interval': interval,
        'bundle_verification_key': key,
        **extra,
    }
    return EmbeddedDriver(Settings(options=options))


def _decisions(driver):
    """(get_thing, delete_thing) for an admin of another project."""
    out = []
    for rule in ('get_thing', 'delete_thing'):
        doc = driver.input_for(rule, ADMIN, TARGET)
        out.append(driver.decide(rule, doc))
    return tuple(out)


def _refused_after_rev1(built, server, tmp_path):
    """A driver that activated rev1, then refused rev2 with a module
    outside the bundle's roots."""
    server.publish(bundle.tarball(built['rev1']))
    driver = _driver(server, tmp_path)
    try:
        assert driver.poller.wait_activated(10)
        files = dict(built['rev2'])
        files['elsewhere.rego'] = b'package other.place\n\nx := 1\n'
        server.publish(bundle.tarball(files))
        assert _wait(lambda: driver.poller.last_error is not None)
    except BaseException:
        driver.close()
        raise
    return driver


def _wait(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _errors(caplog, url):
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == LOG_NAME
        and r.levelno >= logging.ERROR
        and url in r.getMessage()
    ]


def test_activates_then_switches_on_publish_never_a_mix(
    built, server, tmp_path
):
    server.publish(bundle.tarball(built['rev1']))
    driver = _driver(server, tmp_path)
    try:
        assert driver.poller.wait_activated(10)
        assert _decisions(driver) == (True, True)
        assert (
            driver.manifest.revision
            == (json.loads(built['rev1']['manifest.json'])['revision'])
        )
        # Unchanged: every later poll is a 304 for our ETag.
        assert _wait(lambda: server.count(304) >= 3)
        assert driver.generation == 1
        assert all(asked == server.etag for asked, s in server.requests[1:])

        samples: list[tuple] = []
        stop = threading.Event()

        def decide_all_the_time():
            while not stop.is_set():
                before = driver.generation
                got = _decisions(driver)
                samples.append((before, got, driver.generation))

        thread = threading.Thread(target=decide_all_the_time)
        thread.start()
        time.sleep(0.1)
        server.publish(bundle.tarball(built['rev2']))
        assert _wait(lambda: driver.generation == 2)
        time.sleep(0.1)
        stop.set()
        thread.join()
        assert _decisions(driver) == (False, False)
        # Within one policy, both rules are one revision's: never a mix.
        steady = {got for before, got, after in samples if before == after}
        assert steady == {(True, True), (False, False)}
        status = driver.bundle_status()
        assert status['active']['revision'].startswith('p-')
        assert status['last_error'] is None
        on_disk = json.loads(
            (tmp_path / 'cache' / 'status' / f'{os.getpid()}.json').read_text()
        )
        assert on_disk['active']['sha256'] == status['active']['sha256']
        # oslo-opa status --fleet reads it as it reads an OPA's status.
        from oslo_opa import fleet

        path = tmp_path / 'cache' / 'status' / f'{os.getpid()}.json'
        (inst,) = fleet.survey([f'file://{path}'], lambda url: None)
        assert inst.revisions == {'p': status['active']['revision']}
        assert not inst.problems
    finally:
        driver.close()
    assert not (tmp_path / 'cache' / 'status' / f'{os.getpid()}.json').exists()


@pytest.mark.parametrize(
    'bad',
    ['tampered', 'unsigned', 'other key', 'extra file', 'missing file'],
)
def test_refuses_a_bad_signature_and_keeps_the_last_good(
    built, server, tmp_path, caplog, bad
):
    caplog.set_level(logging.INFO, LOG_NAME)
    server.publish(_signed(built['rev1'], built['good']))
    driver = _driver(server, tmp_path, key=built['pub'])
    try:
        assert driver.poller.wait_activated(10)
        assert driver.bundle_status()['active']['signed'] is True
        files = dict(built['rev2'])
        files['.signatures.json'] = bundle_signing.sign_files(
            files, built['other' if bad == 'other key' else 'good']
        )
        if bad == 'tampered':
            name = next(
                n
                for n in files
                if n.endswith('.rego') and b'"superuser"' in files[n]
            )
            files[name] = files[name].replace(b'"superuser"', b'"admin"')
        elif bad == 'unsigned':
            del files['.signatures.json']
        elif bad == 'extra file':
            files['p/extra.rego'] = b'package p.extra\n'
        elif bad == 'missing file':
            del files[next(n for n in files if n.endswith('.fast.rego'))]
        server.publish(bundle.tarball(files))
        assert _wait(lambda: driver.poller.last_error is not None)
        requests = len(server.requests)
        assert _wait(lambda: len(server.requests) >= requests + 3)
        assert driver.generation == 1
        assert _decisions(driver) == (True, True)
        errors = _errors(caplog, server.url)
        assert len(errors) == 1, errors
        assert 'refused' in errors[0] and 'stays in force' in errors[0]
        # The refused bundle is not downloaded again: its ETag gets 304.
        assert server.requests[-1] == (server.etag, 304)
        # The good one, published, goes in force.
        server.publish(_signed(built['rev2'], built['good']))
        assert _wait(lambda: driver.generation == 2)
        assert _decisions(driver) == (False, False)
    finally:
        driver.close()


def test_the_bundle_in_force_published_again_after_a_refused_one(
    built, server, tmp_path
):
    """A refused bundle replaced by the one in force (a rollback): the
    error clears, and polls are conditional on its ETag again, not the
    refused one's (which would download it at every poll)."""
    driver = _refused_after_rev1(built, server, tmp_path)
    try:
        server.publish(bundle.tarball(built['rev1']))
        assert _wait(lambda: driver.poller.last_error is None)
        requests = len(server.requests)
        assert _wait(lambda: len(server.requests) >= requests + 3)
        assert {s for _, s in server.requests[requests:]} == {304}
        assert driver.generation == 1
    finally:
        driver.close()


def test_a_scoped_signature_needs_the_scope_configured(
    built, server, tmp_path
):
    """A bundle signed with a scope (oslo-opa bundle --scope, for OPAs
    configured by opa-config --scope): refused without
    bundle_verification_scope, as OPA refuses it, followed with it."""
    files = dict(built['rev1'])
    files['.signatures.json'] = bundle_signing.sign_files(
        files, built['good'], scope='write'
    )
    server.publish(bundle.tarball(files))
    driver = _driver(server, tmp_path, key=built['pub'])
    try:
        assert _wait(lambda: driver.poller.last_error is not None)
        assert 'scope mismatch' in driver.poller.last_error
        assert not driver.poller.wait_activated(0)
    finally:
        driver.close()
    for scope, refused in (('admin', True), ('write', False)):
        driver = _driver(
            server,
            tmp_path,
            key=built['pub'],
            bundle_verification_scope=scope,
        )
        try:
            if refused:
                poller = driver.poller
                assert _wait(lambda p=poller: p.last_error is not None)
                assert 'scope mismatch' in poller.last_error
            else:
                assert driver.poller.wait_activated(10)
                assert driver.bundle_status()['active']['signed'] is True
                assert _decisions(driver) == (True, True)
        finally:
            driver.close()


@pytest.mark.parametrize('mode', ['500', 'reset', 'garbage', 'slow'])
def test_a_misbehaving_server_changes_nothing(
    built, server, tmp_path, caplog, mode
):
    caplog.set_level(logging.INFO, LOG_NAME)
    server.publish(bundle.tarball(built['rev1']))
    driver = _driver(server, tmp_path)
    try:
        assert driver.poller.wait_activated(10)
        driver.poller.fetcher.total_timeout = 0.3
        server.mode = mode
        server.publish(bundle.tarball(built['rev2']))
        assert _wait(lambda: driver.poller.last_error is not None)
        time.sleep(0.3)
        assert driver.generation == 1
        assert _decisions(driver) == (True, True)
        errors = _errors(caplog, server.url)
        assert len(errors) == 1, errors
        assert 'revision p-' in errors[0]
        server.mode = 'ok'
        assert _wait(lambda: driver.generation == 2)
        assert driver.poller.last_error is None
    finally:
        driver.close()


def test_refuses_modules_outside_the_roots(built, server, tmp_path, caplog):
    caplog.set_level(logging.INFO, LOG_NAME)
    driver = _refused_after_rev1(built, server, tmp_path)
    try:
        assert 'do not permit package other.place' in driver.poller.last_error
        assert driver.generation == 1
    finally:
        driver.close()


def test_keeps_deciding_while_the_server_is_down_then_a_new_process_starts_from_the_kept_copy(  # noqa: E501
    built, server, tmp_path, caplog
):
    caplog.set_level(logging.INFO, LOG_NAME)
    server.publish(bundle.tarball(built['rev1']))
    driver = _driver(server, tmp_path)
    try:
        assert driver.poller.wait_activated(10)
        server.publish(bundle.tarball(built['rev2']))
        assert _wait(lambda: driver.generation == 2)
        server.stop()
        assert _wait(lambda: driver.poller.last_error is not None)
        assert 'cannot download it' in driver.poller.last_error
        assert _decisions(driver) == (False, False)
    finally:
        driver.close()
    script = (
        'import json, sys\n'
        'from tests.unit.test_bundle_fetch import _driver_in_child\n'
        'print(json.dumps(_driver_in_child(*sys.argv[1:])))\n'
    )
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, '-c', script, server.url, str(tmp_path / 'cache')],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    assert child['decisions'] == [False, False]
    assert child['source'] == 'cache'
    assert 'cannot download it' in child['last_error']
    assert time.monotonic() - started < 60


def _driver_in_child(url: str, cache_dir: str) -> dict:
    """In a fresh process, with the server down: what the driver does."""
    logging.basicConfig(level=logging.INFO)
    driver = EmbeddedDriver(
        Settings(
            options={
                'bundle_url': url,
                'bundle_cache_dir': cache_dir,
                'bundle_polling_interval': 0.05,
            }
        )
    )
    assert driver.poller.wait_activated(0)  # before any download
    assert _wait(lambda: driver.poller.last_error is not None)
    out = {
        'decisions': list(_decisions(driver)),
        'source': driver.bundle_status()['active']['source'],
        'last_error': driver.poller.last_error,
    }
    driver.close()
    return out


def test_no_bundle_yet_fails_decisions_with_the_reason(server, tmp_path):
    server.stop()
    driver = _driver(server, tmp_path)
    try:
        assert _wait(lambda: driver.poller.last_error is not None)
        with pytest.raises(DecisionError, match='not in force yet'):
            _decisions(driver)
    finally:
        driver.close()


def test_a_damaged_kept_copy_is_refused_at_start(built, server, tmp_path):
    server.publish(bundle.tarball(built['rev1']))
    driver = _driver(server, tmp_path)
    assert driver.poller.wait_activated(10)
    driver.close()
    cache = tmp_path / 'cache'
    (tarball,) = cache.glob('bundle-*.tar.gz')
    tarball.write_bytes(tarball.read_bytes()[:-10])
    server.stop()
    driver = _driver(server, tmp_path)
    try:
        assert not driver.poller.wait_activated(0.2)
        with pytest.raises(DecisionError):
            _decisions(driver)
    finally:
        driver.close()


def test_a_forked_worker_polls_on_its_own(built, server, tmp_path):
    server.publish(bundle.tarball(built['rev1']))
    driver = _driver(server, tmp_path)
    try:
        assert driver.poller.wait_activated(10)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker: the server runs in its parent
            try:
                steps = [not driver.poller.running]
                steps.append(_decisions(driver) == (True, True))
                steps.append(driver.poller.running)
                os.write(write, bytes(b'01'[s] for s in steps))
                steps = [_wait(lambda: driver.generation == 2)]
                steps.append(_decisions(driver) == (False, False))
                os.write(write, bytes(b'01'[s] for s in steps))
            finally:
                os._exit(0)
        os.close(write)
        # rev2 once the worker decided with what it inherited (its
        # poller, started by that decision, would race the second one).
        assert os.read(read, 3) == b'111'
        server.publish(bundle.tarball(built['rev2']))
        os.waitpid(pid, 0)
        assert os.read(read, 10) == b'11'
        os.close(read)
        status = tmp_path / 'cache' / 'status' / f'{pid}.json'
        assert json.loads(status.read_text())['pid'] == pid
    finally:
        driver.close()


def test_read_tarball_refuses_what_opa_would_not_unpack():
    import io
    import tarfile

    def tgz(*members):
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode='w:gz') as tar:
            for info, data in members:
                tar.addfile(info, io.BytesIO(data) if data else None)
        return raw.getvalue()

    link = tarfile.TarInfo('x.rego')
    link.type = tarfile.SYMTYPE
    link.linkname = '/etc/passwd'
    with pytest.raises(bundle_fetch.FetchError, match='not a regular file'):
        bundle_fetch.read_tarball(tgz((link, None)))
    up = tarfile.TarInfo('../x.rego')
    up.size = 1
    with pytest.raises(bundle_fetch.FetchError, match='not a path inside'):
        bundle_fetch.read_tarball(tgz((up, b'x')))
    big = tarfile.TarInfo('data.json')
    big.size = 100
    with pytest.raises(bundle_fetch.FetchError, match='more than'):
        bundle_fetch.read_tarball(tgz((big, b'x' * 100)), max_bytes=10)
    dot = tarfile.TarInfo('./a/b.rego')
    dot.size = 1
    assert bundle_fetch.read_tarball(tgz((dot, b'x'))) == {'a/b.rego': b'x'}


EVENTLET_CHILD = """
import json, os, sys, time, warnings
warnings.simplefilter('ignore')
import eventlet
eventlet.monkey_patch()
from oslo_opa.drivers.base import Settings
from oslo_opa.drivers.embedded import EmbeddedDriver
from tests.unit.test_bundle_fetch import _decisions

url, cache, ready = sys.argv[1:]
driver = EmbeddedDriver(Settings(options={
    'bundle_url': url, 'bundle_cache_dir': cache,
    'bundle_polling_interval': 0.05}))
assert driver.poller.wait_activated(30)
first = _decisions(driver)
open(ready, 'w').close()
seen = set()
def decide():
    while driver.generation < 2:
        seen.add(_decisions(driver))
        eventlet.sleep(0)
pool = eventlet.GreenPool(8)
for _ in range(8):
    pool.spawn(decide)
pool.waitall()
print(json.dumps({'first': first, 'last': _decisions(driver)}))
"""


def test_polls_in_a_green_thread_under_eventlet(built, server, tmp_path):
    pytest.importorskip('eventlet')
    server.publish(bundle.tarball(built['rev1']))
    ready = tmp_path / 'ready'
    proc = subprocess.Popen(
        [
            sys.executable,
            '-c',
            EVENTLET_CHILD,
            server.url,
            str(tmp_path / 'cache'),
            str(ready),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
    )
    try:
        assert _wait(ready.exists, 60)
        server.publish(bundle.tarball(built['rev2']))
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    got = json.loads(out.strip().splitlines()[-1])
    assert got['first'] == [True, True]
    assert got['last'] == [False, False]


def test_metrics_and_decision_logs_follow_the_bundle_in_force(
    built, server, tmp_path
):
    from oslo_opa import decider, metrics
    from tests.unit.test_metrics import families, value

    def in_force():
        return {
            s.labels['revision']
            for s in families()['oslo_opa_policy_revision_info'].samples
            if s.labels['driver'] == 'embedded' and s.value == 1
        }

    metrics.configure('registry')
    failed = dict(driver='embedded', result='failed')
    server.publish(bundle.tarball(built['rev1']))
    made = decider.load(
        bundle_url=server.url,
        bundle_cache_dir=str(tmp_path / 'cache'),
        bundle_polling_interval=0.05,
    )
    revisions = [
        json.loads(built[r]['manifest.json'])['revision']
        for r in ('rev1', 'rev2')
    ]
    try:
        assert made.driver.poller.wait_activated(10)
        assert in_force() == {revisions[0]}
        assert made.revision() == revisions[0]
        refused = value('oslo_opa_reloads_total', **failed)
        files = dict(built['rev2'])
        files['p/extra.rego'] = b'package elsewhere\n'
        server.publish(bundle.tarball(files))
        assert _wait(lambda: made.driver.poller.last_error is not None)
        assert value('oslo_opa_reloads_total', **failed) == refused + 1
        server.publish(bundle.tarball(built['rev2']))
        assert _wait(lambda: made.driver.generation == 2)
        assert in_force() == {revisions[1]}
        assert made.revision() == revisions[1]
    finally:
        made.close()
        metrics.configure('off')


def test_a_bundles_overlays_and_data_apply(server, tmp_path):
    from oslo_opa import overlay

    directory = policies.converted(str(tmp_path), REV1)
    odir = tmp_path / 'overlays'
    odir.mkdir()
    (odir / 'freeze.rego').write_text(
        'package oslo_opa.overlay\n\n'
        'deny["delete_thing"] contains "frozen" if data.freeze.on\n'
    )
    data = tmp_path / 'freeze.json'
    data.write_text('{"freeze": {"on": true}}')
    path = tmp_path / 'b.tar.gz'
    bundle.build(
        directory,
        str(path),
        data_paths=[str(data)],
        overlays=overlay.load([str(odir)], embedded=False),
    )
    server.publish(path.read_bytes())
    driver = _driver(server, tmp_path)
    try:
        assert driver.poller.wait_activated(10)
        assert _decisions(driver) == (True, False)
        assert 'freeze' in driver.bundle_status()['active']['roots']
    finally:
        driver.close()


def test_a_server_without_etags_costs_downloads_not_activations(
    built, server, tmp_path
):
    server.mode = 'noetag'
    server.publish(bundle.tarball(built['rev1']))
    driver = _driver(server, tmp_path)
    try:
        assert driver.poller.wait_activated(10)
        assert _wait(lambda: server.count(200) >= 4)
        assert server.count(304) == 0
        assert driver.generation == 1
        assert driver.poller.last_error is None
    finally:
        driver.close()


def test_a_service_enforcer_follows_the_bundle(built, server, tmp_path):
    """oslo.policy's Enforcer with the delegation file and [oslo_opa]
    bundle_url (no rego_path), as a service is configured."""
    from oslo_opa import check
    from tests.unit.test_runtime import service

    (tmp_path / 'svc').mkdir()
    directory = policies.converted(str(tmp_path / 'svc'), REV1)
    server.publish(bundle.tarball(built['rev1']))
    check.reset()
    enforcer = service(
        None,
        delegation=os.path.join(directory, 'policy.yaml'),
        bundle_url=server.url,
        bundle_cache_dir=str(tmp_path / 'cache'),
        bundle_polling_interval=0.1,
    )
    try:

        def enforced():
            return tuple(
                enforcer.enforce(rule, TARGET, ADMIN)
                for rule in ('get_thing', 'delete_thing')
            )

        # Decisions deny (failure_mode) until the first bundle is in
        # force; the download happens in the background.
        assert _wait(lambda: enforced() == (True, True))
        server.publish(bundle.tarball(built['rev2']))
        assert _wait(lambda: enforced() == (False, False))
    finally:
        check.reset()


def test_a_cache_it_cannot_write_is_retried_not_held_against_the_bundle(
    built, server, tmp_path
):
    server.publish(bundle.tarball(built['rev1']))
    driver = _driver(server, tmp_path)
    cache = tmp_path / 'cache'
    try:
        assert driver.poller.wait_activated(10)
        # A file where the directory should be (root ignores modes);
        # renamed away, as the poller may be writing its status.
        os.rename(cache, tmp_path / 'moved')
        for _ in range(100):
            try:
                cache.write_text('in the way')
                break
            except IsADirectoryError:
                # The poller wrote its status in between: again.
                shutil.rmtree(cache, ignore_errors=True)
        assert cache.is_file()
        server.publish(bundle.tarball(built['rev2']))
        assert _wait(lambda: driver.poller.last_error is not None)
        assert 'cannot be written to' in driver.poller.last_error
        assert driver.generation == 1
        cache.unlink()
        assert _wait(lambda: driver.generation == 2)
        # Kept once in force (just after).
        assert _wait((cache / 'active.json').exists)
    finally:
        driver.close()
