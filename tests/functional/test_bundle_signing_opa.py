"""Bundles ``oslo-opa bundle --signing-key`` signs, in the real OPA.

* ``opa run --server --bundle ours.tar.gz --verification-key ...``
  activates our signed bundle (RS256, ES256, HS256) and decides by it;
* the same bundle with one ``.rego`` byte changed after signing, and
  repacked, is refused: the server does not start, and says which file;
* ``opa build --verification-key`` and our ``verify_files`` agree on
  each kind of tampering (file changed, missing, added; wrong key,
  algorithm, scope);
* an OPA that picks the key by the id the bundle names (a ``keys``
  config and a bundle with ``signing``) activates ours signed with
  ``--key-id`` and refuses it signed under another id.
"""

from __future__ import annotations

import io
import json
import pathlib
import subprocess
import tarfile

import pytest

from oslo_opa import bundle_signing, cli, decider
from oslo_opa.errors import BundleSignatureError
from tests.functional import test_opa_sidecar as sidecar
from tests.functional.conftest import run_opa
from tests.functional.test_opa_sidecar import Opa
from tests.policies import THINGS, converted
from tests.processes import free_port

KEYS = pathlib.Path(__file__).resolve().parents[1] / 'fixtures' / 'signed'
KEYS = KEYS / 'keys'
# alg -> (signing key, verification key): test-only keys.
ALGS = {
    'RS256': ('rs256.pem', 'rs256.pub.pem'),
    'ES256': ('es256.pem', 'es256.pub.pem'),
    'HS256': ('hs256.secret', 'hs256.secret'),
}
KEY_ID = 'oslo-test'
ADMIN = {'roles': ['admin'], 'project_id': 'other'}
MEMBER = {'roles': ['member'], 'project_id': 'p1'}


@pytest.fixture(scope='module')
def policy(tmp_path_factory) -> str:
    return converted(str(tmp_path_factory.mktemp('signed')), THINGS)


def signed_bundle(policy, out, alg='RS256', *extra) -> str:
    argv = ['bundle', policy, '-o', str(out), '--signing-alg', alg]
    argv += ['--signing-key', str(KEYS / ALGS[alg][0]), *extra]
    assert cli.main(argv) == 0
    return str(out)


def verification_args(alg, key_id=KEY_ID, public=None) -> list[str]:
    public = public or str(KEYS / ALGS[alg][1])
    return [
        '--verification-key', public, '--verification-key-id', key_id,
        '--signing-alg', alg,
    ]  # fmt: skip


def read(path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


def repack(files: dict[str, bytes], out) -> str:
    """files as a bundle again, as an attacker would repack it."""
    with tarfile.open(out, 'w:gz') as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return str(out)


def one_byte_changed(content: bytes) -> bytes:
    at = content.index(b'allow')
    return content[:at] + b'A' + content[at + 1 :]


@pytest.mark.parametrize('alg', sorted(ALGS))
def test_opa_activates_our_signed_bundle(opa_bin, policy, tmp_path, alg):
    path = signed_bundle(
        policy, tmp_path / 'b.tar.gz', alg, '--key-id', KEY_ID
    )
    opa = Opa(
        opa_bin, tmp_path, bundles=[path], extra_args=verification_args(alg)
    )
    opa.start()  # waits for /health?bundles: the bundle is active
    http = decider.load(
        policy, driver='http', opa_url=opa.url, cache_size=0, opa_warm_up=False
    )
    try:
        assert http.decide('get_thing', {'project_id': 'p1'}, ADMIN)
        assert http.decide('get_thing', {'project_id': 'p1'}, MEMBER)
        assert not http.decide('get_thing', {'project_id': 'p2'}, MEMBER)
        assert not http.decide('delete_thing', {}, MEMBER)
    finally:
        http.close()
        opa.stop()


@pytest.mark.parametrize('alg', sorted(ALGS))
def test_opa_refuses_our_bundle_tampered_after_signing(
    opa_bin, policy, tmp_path, alg
):
    files = read(signed_bundle(policy, tmp_path / 'b.tar.gz', alg))
    files['p/get_thing.rego'] = one_byte_changed(files['p/get_thing.rego'])
    tampered = repack(files, tmp_path / 'tampered.tar.gz')
    try:
        proc = run_opa(
            opa_bin, 'run', '--server', '--skip-version-check',
            '--addr', f'127.0.0.1:{free_port()}', '--bundle', tampered,
            *verification_args(alg), timeout=60,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail('opa started with a tampered bundle')
    assert proc.returncode != 0
    # opa run reports a load error on stdout.
    assert 'p/get_thing.rego: digest mismatch' in proc.stdout + proc.stderr
    key = bundle_signing.read_key(str(KEYS / ALGS[alg][1]))
    with pytest.raises(BundleSignatureError, match='get_thing.rego: digest'):
        bundle_signing.verify_files(files, key, alg)


def _variant(case, files, alg):
    """files and the verification (alg, public key, scope) for case."""
    public, scope = str(KEYS / ALGS[alg][1]), None
    if case == 'data changed':
        files['data.json'] = b'{"oslo_fixture": {"n": 2}}'
    elif case == 'file missing':
        del files['p/admin.rego']
    elif case == 'extra file':
        files['p/extra.rego'] = b'package p.extra\n'
    elif case == 'manifest reformatted':
        manifest = json.loads(files['.manifest'])
        files['.manifest'] = json.dumps(manifest, indent=4).encode()
    elif case == 'wrong key':
        public = str(KEYS / 'es256.pub.pem')
        alg = 'ES256'
    elif case == 'wrong algorithm':
        alg = 'PS256'
    elif case == 'scope expected':
        scope = 'write'
    return files, alg, public, scope


# case -> whether OPA accepts it (and so must we)
CASES = {
    'untouched': True,
    'manifest reformatted': True,
    'data changed': False,
    'file missing': False,
    'extra file': False,
    'wrong key': False,
    'wrong algorithm': False,
    'scope expected': False,
}


def test_opa_build_and_verify_files_agree(opa_bin, policy, tmp_path):
    data = tmp_path / 'data.json'
    data.write_text('{"oslo_fixture": {"n": 1}}')
    signed = signed_bundle(
        policy, tmp_path / 'b.tar.gz', 'RS256', '--data', str(data)
    )
    verdicts = {}
    for n, case in enumerate(CASES):
        files, alg, public, scope = _variant(case, read(signed), 'RS256')
        path = repack(files, tmp_path / f'{n}.tar.gz')
        args = ['build', '--bundle', path, '-o', str(tmp_path / 'o.tar.gz')]
        args += verification_args(alg, public=public)
        args += ['--scope', scope] if scope else []
        proc = run_opa(opa_bin, *args, timeout=120)
        try:
            bundle_signing.verify_files(
                files, bundle_signing.read_key(public), alg, scope=scope
            )
            ours = True
        except BundleSignatureError:
            ours = False
        verdicts[case] = (proc.returncode == 0, ours, proc.stderr.strip())
    assert {c: v[:2] for c, v in verdicts.items()} == {
        c: (ok, ok) for c, ok in CASES.items()
    }, verdicts


def _config(tmp_path, bundle_path, alg) -> str:
    """OPA config: a bundle that must be signed, by a key chosen by the
    id the bundle names (no signing.keyid)."""
    public = (KEYS / ALGS[alg][1]).read_text()
    config = {
        'bundles': {
            'p': {
                'resource': f'file://{bundle_path}',
                'signing': {},
                'polling': {'min_delay_seconds': 1, 'max_delay_seconds': 2},
            }
        },
        'keys': {KEY_ID: {'key': public, 'algorithm': alg}},
    }
    path = tmp_path / 'config.json'
    path.write_text(json.dumps(config))
    return str(path)


@pytest.mark.parametrize('alg', ['ES256'])
def test_opa_picks_the_key_by_our_key_id(
    opa_bin, policy, tmp_path, monkeypatch, alg
):
    good = signed_bundle(
        policy, tmp_path / 'g.tar.gz', alg, '--key-id', KEY_ID
    )
    opa = Opa(
        opa_bin, tmp_path, extra_args=['-c', _config(tmp_path, good, alg)]
    )
    opa.start()  # /health?bundles: activated
    opa.stop()

    bad = signed_bundle(policy, tmp_path / 'b.tar.gz', alg, '--key-id', 'x')
    opa = Opa(
        opa_bin, tmp_path, extra_args=['-c', _config(tmp_path, bad, alg)]
    )
    # OPA stays up without the bundle, retrying: give it a few seconds.
    monkeypatch.setattr(sidecar, 'START_TIMEOUT', 8.0)
    with pytest.raises(pytest.fail.Exception, match='did not become healthy'):
        opa.start()
    opa.stop()
    with open(opa.log) as f:
        log = f.read()
    assert 'verification key corresponding to ID x not found' in log, log
