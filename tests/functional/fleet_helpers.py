"""What the bundle-fleet tests share: converting, signing (``oslo-opa
bundle --signing-key``) and tampering with bundles, publishing them
into nginx's root, a status collector, and asking OPAs which revision
decided."""

from __future__ import annotations

import http.server
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time

import pytest

from oslo_opa import cli
from oslo_opa.convert import convert
from oslo_opa.drivers.transport import Transport, TransportError

SERVICE = 'placement'
RULE = 'placement:resource_providers:list'
READER = {'roles': ['reader'], 'project_id': 'p1', 'user_id': 'u1'}
RESOURCE = f'{SERVICE}.tar.gz'


def converted(root, policy_text):
    policy = root / 'policy.yaml'
    policy.write_text(policy_text)
    out = root / 'opa'
    convert(str(out), policy_files=[str(policy)], package_prefix=SERVICE)
    return str(out)


def signed_bundle(directory, out, *signing):
    """oslo-opa bundle directory -o out with the signing options; the
    revision it recorded."""
    assert cli.main(['bundle', directory, '-o', out, *signing]) == 0
    with tarfile.open(out) as tar:
        manifest = json.load(tar.extractfile('.manifest'))
    with tarfile.open(out) as tar:
        assert '.signatures.json' in tar.getnames()
    return manifest['revision']


def tamper(signed, out):
    """signed with one module's bytes changed, its signature kept."""
    with tarfile.open(signed) as src, tarfile.open(out, 'w:gz') as dst:
        for info in src.getmembers():
            data = src.extractfile(info).read() if info.isfile() else b''
            if info.name.endswith('resource_providers_list.rego'):
                data += b'\n# changed after signing\n'
                info.size = len(data)
            dst.addfile(info, io.BytesIO(data))


class Publisher:
    """Bundles into nginx's root, as a deployment would: written aside,
    renamed into place.  nginx's ETag is the file's mtime (seconds) and
    size, so each publish gets a later mtime than the one before: two
    bundles of one size published within a second would look the same
    to OPA's conditional GET."""

    def __init__(self, root):
        self.root = root
        self.mtime = int(time.time())

    def publish(self, path, name=RESOURCE):
        tmp = os.path.join(self.root, f'.{name}.tmp')
        shutil.copyfile(path, tmp)
        self.mtime = max(self.mtime + 1, int(time.time()))
        os.utime(tmp, (self.mtime, self.mtime))
        os.replace(tmp, os.path.join(self.root, name))
        return time.monotonic()


class Collector(http.server.ThreadingHTTPServer):
    """A status (and decision-log) collector: keeps what OPA posts."""

    def __init__(self):
        self.posts = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(inner):  # noqa: N805
                body = inner.rfile.read(int(inner.headers['Content-Length']))
                self.posts.append((inner.path, body))
                inner.send_response(200)
                inner.end_headers()

            def log_message(inner, *args):  # noqa: N805
                pass

        super().__init__(('127.0.0.1', 0), Handler)
        self.url = f'http://127.0.0.1:{self.server_address[1]}'
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def statuses(self):
        out = []
        for path, body in self.posts:
            if path.startswith('/status'):
                try:
                    out.append(json.loads(body))
                except ValueError:
                    pass
        return out


def ask(opa, path):
    """(revision that decided, decision) of one request to opa."""
    client = Transport(opa.url, connect_timeout=2.0, read_timeout=10.0)
    try:
        body = json.dumps(
            {'input': {'credentials': READER, 'target': {}, 'rule': RULE}}
        ).encode()
        code, data = client.request(
            'POST', f'/v1/data/{path}?provenance=true', body
        )
    finally:
        client.close()
    assert code == 200, data
    doc = json.loads(data)
    bundles = doc['provenance'].get('bundles') or {}
    return bundles.get(SERVICE, {}).get('revision'), doc.get('result')


class Checker(threading.Thread):
    """Asks one OPA (or embedded worker) over and over, recording
    (revision, decision)."""

    def __init__(self, opa, path):
        super().__init__(daemon=True)
        self.opa, self.path = opa, path
        self.answers = []
        self.failures = []
        # Answers during which the revision in force changed (embedded
        # workers): which revision decided them cannot be told.
        self.unattributed = 0
        self.halt = threading.Event()

    def one(self, client):
        """(revision, decision) of one request, or None."""
        body = json.dumps(
            {'input': {'credentials': READER, 'target': {}, 'rule': RULE}}
        ).encode()
        code, data = client.request(
            'POST', f'/v1/data/{self.path}?provenance=true', body
        )
        doc = json.loads(data)
        rev = doc['provenance']['bundles'][SERVICE]['revision']
        return rev, doc.get('result')

    def run(self):
        client = Transport(self.opa.url, connect_timeout=2.0)
        try:
            while not self.halt.is_set():
                try:
                    answer = self.one(client)
                    if answer is None:
                        self.unattributed += 1
                    else:
                        self.answers.append(answer)
                except (TransportError, KeyError, ValueError) as e:
                    self.failures.append(repr(e))
                time.sleep(0.01)
        finally:
            client.close()


class WorkerChecker(Checker):
    """A Checker asking an embedded worker's ``GET /decide``: an answer
    counts when the revision in force was the same before and after."""

    def one(self, client):
        return self.opa.decide(client)


class Embedded:
    """A process running the embedded driver on bundle_url
    (``embedded_worker.py``), asked over a loopback HTTP server;
    stopped when the test ends."""

    SCRIPT = os.path.join(os.path.dirname(__file__), 'embedded_worker.py')

    def __init__(self, workdir, bundle_url, key, scope, cache_dir, name):
        from tests.processes import free_port

        self.workdir = str(workdir)
        self.bundle_url, self.key, self.scope = bundle_url, key, scope
        self.cache_dir = str(cache_dir)
        self.port = free_port()
        self.url = f'http://127.0.0.1:{self.port}'
        self.log = os.path.join(self.workdir, f'embedded-{name}.log')
        self.proc = None

    def start(self):
        root = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
        with open(self.log, 'ab') as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    self.SCRIPT,
                    str(self.port),
                    self.bundle_url,
                    self.key,
                    self.scope,
                    self.cache_dir,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=root,
                env={**os.environ, 'PYTHONPATH': root},
            )
        wait_for(self._up, 30, f'embedded worker on {self.url}')
        return self

    def _up(self):
        if self.proc.poll() is not None:
            pytest.fail(f'embedded worker exited: {open(self.log).read()}')
        try:
            self.get('/status')
            return True
        except (TransportError, OSError):
            return False

    def get(self, path, client=None):
        own = client is None
        if own:
            client = Transport(self.url, connect_timeout=2.0)
        try:
            code, data = client.request('GET', path)
        finally:
            if own:
                client.close()
        assert code == 200, data
        return json.loads(data)

    def decide(self, client=None):
        """(revision, decision), or None when the revision in force
        changed while deciding."""
        doc = self.get('/decide', client)
        before = (doc['generation_before'], doc['revision_before'])
        if before != (doc['generation_after'], doc['revision_after']):
            return None
        return doc['revision_before'], doc['result']

    def status(self):
        return self.get('/status')

    @property
    def status_file(self):
        return os.path.join(self.cache_dir, 'status', f'{self.proc.pid}.json')

    def status_url(self):
        return f'file://{self.status_file}'

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(0.05)
    pytest.fail(f'{what}: not within {timeout}s')


def bundle_state(opa) -> dict:
    """What opa says of the SERVICE bundle (``system/bundles``)."""
    client = Transport(opa.url, connect_timeout=2.0)
    try:
        _, data = client.request('GET', '/v1/data/system/bundles')
    finally:
        client.close()
    result = json.loads(data).get('result') or {}
    return result.get(SERVICE) or {}


def revisions(opas):
    return [
        bundle_state(opa).get('manifest', {}).get('revision') for opa in opas
    ]


def fleet_status(urls, capsys):
    code = cli.main(['status', '--timeout', '10', '--fleet', *urls])
    return code, capsys.readouterr().out


# The operators' guide's authorization policy: decisions and reads only.
AUTHZ = """\
package system.authz

default allow := false

allow if {
    input.method == "POST"
    input.path[0] == "v1"
    input.path[1] == "data"
}

allow if {
    input.method == "GET"
    input.path[0] in {"health", "v1"}
    not input.path[1] == "policies"
}
"""


def authz_dir(root):
    """A directory bundle of the guide's system.authz policy."""
    out = os.path.join(str(root), 'authz')
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, 'authz.rego'), 'w') as f:
        f.write(AUTHZ)
    with open(os.path.join(out, '.manifest'), 'w') as f:
        json.dump({'roots': ['system/authz']}, f)
    return out


def active_revisions(workers):
    """The bundle revision each embedded worker's driver has in force."""
    out = []
    for worker in workers:
        active = worker.status().get('active') or {}
        out.append(active.get('revision'))
    return out
