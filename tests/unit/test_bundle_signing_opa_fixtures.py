"""Our verifier against bundles the real ``opa build --signing-key``
signed (``tests/fixtures/signed``, made by ``tools/gen_signed_fixtures.py``
with test-only keys): it accepts each as OPA does, refuses each kind of
tampering, and signs the same files into the same ``.signatures.json``."""

from __future__ import annotations

import base64
import json
import pathlib
import tarfile

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from oslo_opa import bundle_signing as bs
from oslo_opa.errors import BundleSignatureError

SIGNED = pathlib.Path(__file__).resolve().parents[1] / 'fixtures' / 'signed'
KEYS = SIGNED / 'keys'
# fixture -> (algorithm, signing key, verification key, key id, scope)
FIXTURES = {
    'rs256': ('RS256', 'rs256.pem', 'rs256.pub.pem', 'test-rs256', None),
    'es256': ('ES256', 'es256.pem', 'es256.pub.pem', 'test-es256', None),
    'hs256': ('HS256', 'hs256.secret', 'hs256.secret', 'test-hs256', None),
    'rs256-scope': (
        # With --claims-file, opa build names no key id.
        'RS256', 'rs256.pem', 'rs256.pub.pem', None, 'write',
    ),
}  # fmt: skip
SIG = '/.signatures.json'


def opa_bundle(name: str) -> dict[str, bytes]:
    """The files of a fixture, named as OPA wrote them (/ first)."""
    with tarfile.open(SIGNED / f'{name}.tar.gz') as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


def key(name: str) -> bytes:
    return bs.read_key(str(KEYS / name))


@pytest.mark.parametrize('name', sorted(FIXTURES))
def test_opa_signed_bundles_verify(name):
    alg, _, public, key_id, scope = FIXTURES[name]
    files = opa_bundle(name)
    bs.verify_files(files, key(public), alg, key_id=key_id, scope=scope)
    bs.verify_files(files, key(public), alg, scope=scope)


def test_a_private_key_verifies_opas_too():
    bs.verify_files(opa_bundle('es256'), key('es256.pem'), 'ES256')


@pytest.mark.parametrize('name', ['rs256', 'hs256'])
def test_we_sign_the_same_files_into_the_same_bytes(name):
    """Deterministic algorithms: our .signatures.json is opa build's."""
    alg, private, _, key_id, _ = FIXTURES[name]
    files = opa_bundle(name)
    ours = bs.sign_files(files, key(private), alg, key_id=key_id)
    assert ours == files[SIG]


@pytest.mark.parametrize('name', sorted(FIXTURES))
def test_our_signature_of_opas_files_verifies(name):
    alg, private, public, key_id, scope = FIXTURES[name]
    files = opa_bundle(name)
    files[SIG] = bs.sign_files(files, key(private), alg, key_id, scope)
    bs.verify_files(files, key(public), alg, key_id=key_id, scope=scope)


def _other_key(alg: str) -> bytes:
    if alg.startswith('HS'):
        return b'another test-only secret, 32 bytes long'
    private = (
        rsa.generate_private_key(65537, 2048)
        if alg.startswith('RS')
        else ec.generate_private_key(ec.SECP256R1())
    )
    return private.public_key().public_bytes(
        serialization.Encoding.PEM,
        serialization.PublicFormat.SubjectPublicKeyInfo,
    )


def _edit_jwt(files, edit) -> None:
    doc = json.loads(files[SIG])
    head, body, sig = doc['signatures'][0].split('.')
    claims = json.loads(base64.urlsafe_b64decode(body + '=' * 3))
    edit(claims)
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode()
    doc['signatures'] = [f'{head}.{body.rstrip("=")}.{sig}']
    files[SIG] = json.dumps(doc).encode()


# case -> what the one-line error says
CASES = {
    'rego byte changed': '/get_thing.rego: digest mismatch',
    'data value changed': 'data.json: digest mismatch',
    'manifest changed': '.manifest: digest mismatch',
    'file missing': 'p/admin.rego specified in bundle signatures but not',
    'extra file': 'file p/extra.rego not included in bundle signature',
    'no signature': 'bundle missing .signatures.json file',
    'empty signatures': 'expected exactly one JWT',
    'claims edited': 'JWT signature does not verify',
    'wrong key': 'JWT signature does not verify',
    'wrong algorithm': 'expected {wrong}',
    'wrong key id': "expected 'someone-else'",
    'wrong scope': 'scope mismatch',
}
WRONG_ALG = {'RS256': 'PS256', 'ES256': 'ES384', 'HS256': 'HS512'}


@pytest.mark.parametrize('case', sorted(CASES))
@pytest.mark.parametrize('name', sorted(FIXTURES))
def test_tampered_opa_bundles_are_refused(name, case):
    alg, _, public, key_id, scope = FIXTURES[name]
    files, verify_key = opa_bundle(name), key(public)
    if case == 'rego byte changed':
        rego = files['/p/get_thing.rego']
        files['/p/get_thing.rego'] = (
            rego[:40] + bytes([rego[40] ^ 1]) + rego[41:]
        )
    elif case == 'data value changed':
        files['/data.json'] = files['/data.json'].replace(
            b'"n":1.5', b'"n":2.5'
        )
    elif case == 'manifest changed':
        manifest = json.loads(files['/.manifest'])
        manifest['roots'].append('keystone')
        files['/.manifest'] = json.dumps(manifest).encode()
    elif case == 'file missing':
        del files['/p/admin.rego']
    elif case == 'extra file':
        files['/p/extra.rego'] = b'package p.extra\n'
    elif case == 'no signature':
        del files[SIG]
    elif case == 'empty signatures':
        files[SIG] = b'{"signatures": []}'
    elif case == 'claims edited':
        _edit_jwt(files, lambda c: c['files'].pop())
    elif case == 'wrong key':
        verify_key = _other_key(alg)
    elif case == 'wrong algorithm':
        alg = WRONG_ALG[alg]
    elif case == 'wrong key id':
        key_id = 'someone-else'
    elif case == 'wrong scope':
        scope = 'read' if scope else 'write'
    with pytest.raises(BundleSignatureError) as e:
        bs.verify_files(files, verify_key, alg, key_id=key_id, scope=scope)
    assert CASES[case].format(wrong=alg) in str(e.value)


def test_data_reformatted_still_verifies():
    """OPA hashes data.json by value: layout and key order are free."""
    alg, _, public, _, _ = FIXTURES['rs256']
    files = opa_bundle('rs256')
    data = json.loads(files['/data.json'])
    files['/data.json'] = json.dumps(
        data, indent=3, ensure_ascii=True
    ).encode()
    bs.verify_files(files, key(public), alg)
