"""Bundle signatures we make: they verify, and any change is refused.

The same checks against bundles the real ``opa build --signing-key``
signed are in ``test_bundle_signing_opa_fixtures``; OPA refusing our
tampered bundles is in ``tests/functional/test_bundle_signing_opa``.
"""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from oslo_opa import bundle_signing as bs
from oslo_opa.bundle_hashing import hash_file
from oslo_opa.errors import BundleSignatureError, OsloOpaError

FILES = {
    'p/get_thing.rego': b'package p.get_thing\n\nallow := true\n',
    'oslo_opa/lib/checks.rego': b'package oslo_opa.lib\n',
    'data.json': b'{"roles": {"reader": ["r"]}, "n": 1.0}',
    '.manifest': b'{"revision": "r1", "roots": ["p", "oslo_opa/lib"]}',
}
# A data file with what Go's JSON encoding treats specially (HTML
# characters, U+2028, \b \f, a control, DEL, a lone surrogate, a float
# written 1.0 and 1e2), and the hash OPA v1.22.3's opa build signed for
# it (read from its .signatures.json).
TRICKY = (
    b'{"b":{"z":1.0,"a":[1e2,"<&>\\u2028\\b\\f\\u0001\\u007f\\ud800'
    b'\xc3\xa9"]}}'
)
TRICKY_OPA_SHA256 = (
    '2fa9477d468638f22f416422a1b8006aba82282970f484d1847c360c01bb1056'
)


def _pem(private) -> tuple[bytes, bytes]:
    key = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    pub = private.public_key().public_bytes(
        serialization.Encoding.PEM,
        serialization.PublicFormat.SubjectPublicKeyInfo,
    )
    return key, pub


@pytest.fixture(scope='module')
def keys() -> dict[str, tuple[bytes, bytes]]:
    """alg -> (signing key, verification key); two of each kind."""
    rsa1 = _pem(rsa.generate_private_key(65537, 2048))
    rsa2 = _pem(rsa.generate_private_key(65537, 2048))
    return {
        'RS256': rsa1,
        'PS256': rsa1,
        'RS256-other': rsa2,
        'ES256': _pem(ec.generate_private_key(ec.SECP256R1())),
        'ES256-other': _pem(ec.generate_private_key(ec.SECP256R1())),
        'ES384': _pem(ec.generate_private_key(ec.SECP384R1())),
        'HS256': (
            b'a test-only secret, 32 bytes or more\n',
            b'a test-only secret, 32 bytes or more\n',
        ),
    }


def _signed(keys, alg='RS256', **kw) -> dict[str, bytes]:
    files = dict(FILES)
    files['.signatures.json'] = bs.sign_files(files, keys[alg][0], alg, **kw)
    return files


def _jwt(files) -> tuple[dict, dict]:
    name = '/.signatures.json' if '/.manifest' in files else '.signatures.json'
    token = json.loads(files[name])['signatures'][0]
    head, body, _ = token.split('.')
    return tuple(
        json.loads(base64.urlsafe_b64decode(p + '=' * (-len(p) % 4)))
        for p in (head, body)
    )


@pytest.mark.parametrize('alg', ['RS256', 'PS256', 'ES256', 'ES384', 'HS256'])
def test_our_signatures_verify(keys, alg):
    files = _signed(keys, alg, key_id='k1', scope='write')
    bs.verify_files(files, keys[alg][1], alg, key_id='k1', scope='write')
    # Without a key id to require, any the bundle names will do.
    bs.verify_files(files, keys[alg][1], alg, scope='write')


def test_the_format_is_opa_builds(keys):
    files = _signed(keys, key_id='k1')
    document = json.loads(files['.signatures.json'])
    assert document['plugin'] == '_default'
    assert files['.signatures.json'].startswith(b'{\n "signatures": [\n  "')
    header, claims = _jwt(files)
    assert header == {'alg': 'RS256', 'kid': 'k1', 'typ': 'JWT'}
    assert list(claims) == ['files', 'keyid']
    assert claims['keyid'] == 'k1'
    names = [f['name'] for f in claims['files']]
    # Modules, data, then the manifest, as opa build lists them.
    assert names == [
        'oslo_opa/lib/checks.rego',
        'p/get_thing.rego',
        'data.json',
        '.manifest',
    ]
    assert all(
        list(f) == ['name', 'hash', 'algorithm'] for f in claims['files']
    )
    assert {f['algorithm'] for f in claims['files']} == {'SHA-256'}


def test_rsa_and_hmac_signatures_are_reproducible(keys):
    for alg in ('RS256', 'HS256'):
        assert _signed(keys, alg) == _signed(keys, alg)


def test_no_key_id_no_kid(keys):
    header, claims = _jwt(_signed(keys))
    assert (
        'kid' not in header and 'keyid' not in claims and 'scope' not in claims
    )


def test_names_are_those_of_the_tarball_without_the_leading_slash(keys):
    files = {'/' + n: c for n, c in FILES.items()}
    files['/.signatures.json'] = bs.sign_files(files, keys['RS256'][0])
    assert '/.signatures.json' not in str(_jwt(files)[1])
    bs.verify_files(files, keys['RS256'][1])
    bs.verify_files(
        {n.lstrip('/'): c for n, c in files.items()}, keys['RS256'][1]
    )


def _tamper(files, keys, case):
    """(files, key, alg, key_id, scope) for each tampering case."""
    files = dict(files)
    key, alg, key_id, scope = keys['RS256'][1], 'RS256', 'k1', None
    if case == 'rego changed':
        files['p/get_thing.rego'] = files['p/get_thing.rego'].replace(
            b'true', b'false'
        )
    elif case == 'data changed':
        files['data.json'] = b'{"roles": {"reader": ["r", "x"]}, "n": 1.0}'
    elif case == 'number rewritten':
        files['data.json'] = b'{"roles": {"reader": ["r"]}, "n": 1}'
    elif case == 'manifest changed':
        files['.manifest'] = b'{"revision": "r2", "roots": ["p"]}'
    elif case == 'file missing':
        del files['oslo_opa/lib/checks.rego']
    elif case == 'extra file':
        files['p/extra.rego'] = b'package p.extra\n'
    elif case == 'no signature':
        del files['.signatures.json']
    elif case == 'two signatures files':
        files['p/.signatures.json'] = files['.signatures.json']
    elif case == 'malformed signatures':
        files['.signatures.json'] = b'{"signatures": '
    elif case == 'two JWTs':
        doc = json.loads(files['.signatures.json'])
        doc['signatures'] *= 2
        files['.signatures.json'] = json.dumps(doc).encode()
    elif case == 'another plugin':
        doc = json.loads(files['.signatures.json'])
        doc['plugin'] = 'vault'
        files['.signatures.json'] = json.dumps(doc).encode()
    elif case == 'claims forged':
        doc = json.loads(files['.signatures.json'])
        head, body, sig = doc['signatures'][0].split('.')
        claims = json.loads(base64.urlsafe_b64decode(body + '=='))
        claims['files'].append({'name': 'x', 'hash': '', 'algorithm': ''})
        body = base64.urlsafe_b64encode(json.dumps(claims).encode())
        doc['signatures'] = [f'{head}.{body.decode().rstrip("=")}.{sig}']
        files['.signatures.json'] = json.dumps(doc).encode()
    elif case == 'wrong key':
        key = keys['RS256-other'][1]
    elif case == 'wrong algorithm':
        key, alg = keys['ES256'][1], 'ES256'
    elif case == 'key of another kind':
        key = keys['ES256'][1]
    elif case == 'wrong key id':
        key_id = 'k2'
    elif case == 'wrong scope':
        scope = 'admin'
    return files, key, alg, key_id, scope


TAMPERING = {
    'rego changed': 'p/get_thing.rego: digest mismatch',
    'data changed': 'data.json: digest mismatch',
    'number rewritten': 'data.json: digest mismatch',
    'manifest changed': '.manifest: digest mismatch',
    'file missing': 'file(s) oslo_opa/lib/checks.rego specified in bundle '
    'signatures but not found',
    'extra file': 'file p/extra.rego not included in bundle signature',
    'no signature': 'bundle missing .signatures.json file',
    'two signatures files': 'multiple signatures files',
    'malformed signatures': '.signatures.json: not a JSON object',
    'two JWTs': 'expected exactly one JWT',
    'another plugin': "plugin 'vault'",
    'claims forged': 'JWT signature does not verify with the RS256 key',
    'wrong key': 'JWT signature does not verify with the RS256 key',
    'wrong algorithm': "signed with 'RS256', expected ES256",
    'key of another kind': 'not an RSA key, as RS256 needs',
    'wrong key id': "signed with key id 'k1', expected 'k2'",
    'wrong scope': "scope mismatch: signed for '', expected 'admin'",
}


@pytest.mark.parametrize('case', sorted(TAMPERING))
def test_tampering_is_refused(keys, case):
    files, key, alg, key_id, scope = _tamper(
        _signed(keys, key_id='k1'), keys, case
    )
    with pytest.raises(BundleSignatureError) as e:
        bs.verify_files(files, key, alg, key_id=key_id, scope=scope)
    assert TAMPERING[case] in str(e.value)
    assert '\n' not in str(e.value)
    assert isinstance(e.value, OsloOpaError)


def test_a_signed_scope_must_be_expected(keys):
    files = _signed(keys, scope='write')
    with pytest.raises(BundleSignatureError, match='scope mismatch'):
        bs.verify_files(files, keys['RS256'][1])


def test_data_is_hashed_by_value_not_bytes(keys):
    files = _signed(keys)
    files['data.json'] = b'{ "n" : 1.0,\n  "roles": {"reader": [ "r" ]} }\n'
    files['.manifest'] = b'\xef\xbb\xbf{"roots": ["p", "oslo_opa/lib"],\n'
    files['.manifest'] += b' "revision": "r1"}'
    bs.verify_files(files, keys['RS256'][1])


def test_data_hash_is_opas():
    assert hash_file('data.json', TRICKY) == TRICKY_OPA_SHA256
    assert hash_file('a/b/data.json', TRICKY) == TRICKY_OPA_SHA256
    # Other JSON files are hashed by their bytes.
    assert hash_file('other.json', TRICKY) != TRICKY_OPA_SHA256


@pytest.mark.parametrize(
    'name,content,message',
    [
        ('data.yaml', b'a: 1\n', 'YAML data files'),
        ('data.json', b'{"a": NaN}', 'data.json: not valid JSON'),
        ('data.json', b'a: 1\n', 'data.json: not valid JSON'),
    ],
)
def test_data_we_cannot_hash_as_opa_does_is_refused(name, content, message):
    with pytest.raises(BundleSignatureError, match=message):
        hash_file(name, content)


def test_hash_algorithms_opa_knows(keys):
    assert hash_file('x.rego', b'x', 'SHA-512-256') != hash_file(
        'x.rego', b'x'
    )
    with pytest.raises(BundleSignatureError, match='unsupported hashing'):
        hash_file('x.rego', b'x', 'SHA3-256')


def test_bad_keys_are_named(keys, tmp_path):
    with pytest.raises(BundleSignatureError, match='unsupported signing'):
        bs.sign_files(FILES, keys['HS256'][0], 'none')
    with pytest.raises(BundleSignatureError, match='PEM private key'):
        bs.sign_files(FILES, keys['RS256'][1], 'RS256')
    with pytest.raises(BundleSignatureError, match='not an EC key'):
        bs.sign_files(FILES, keys['RS256'][0], 'ES256')
    with pytest.raises(BundleSignatureError, match='PEM public key'):
        bs.verify_files(_signed(keys), b'not a key', 'RS256')


def test_a_private_key_verifies_too(keys):
    bs.verify_files(_signed(keys, 'ES256'), keys['ES256'][0], 'ES256')


def test_read_key(tmp_path):
    path = tmp_path / 'secret'
    path.write_bytes(b'secret\n')
    # As OPA reads it: the trailing newline is part of the secret.
    assert bs.read_key(str(path)) == b'secret\n'
    with pytest.raises(BundleSignatureError, match=f'{tmp_path}/nope: cannot'):
        bs.read_key(str(tmp_path / 'nope'))
    (tmp_path / 'empty').write_bytes(b'')
    with pytest.raises(BundleSignatureError, match='empty'):
        bs.read_key(str(tmp_path / 'empty'))
