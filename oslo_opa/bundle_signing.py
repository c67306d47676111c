"""OPA bundle signatures: write and check a bundle's ``.signatures.json``.

A signed bundle carries ``.signatures.json``: ``{"signatures": [JWT],
"plugin": "_default"}``, one JWT whose ``files`` claim lists every other
file of the bundle with its SHA-256.  OPA refuses the bundle unless the
JWT verifies with its key and the bundle holds exactly the files listed,
with those hashes.  This module writes and checks that file as OPA v1.22
does (its ``v1/bundle`` package: ``sign.go``, ``verify.go``, ``hash.go``,
``bundle.go``, ``keys.go``), so ``opa run --verification-key`` accepts our
bundles and we accept ``opa build --signing-key``'s.  The JWT is PyJWT's;
the per-file hash is ``bundle_hashing``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Mapping
from typing import Any

import jwt

from oslo_opa.bundle_hashing import (
    hash_file,
    is_signatures_file,
    is_structured,
)
from oslo_opa.bundle_keys import (
    ALGORITHMS,
    check_alg,
    read_key,
    signing_key,
    verifying_key,
)
from oslo_opa.errors import BundleSignatureError

__all__ = [
    'ALGORITHMS',
    'BundleSignatureError',
    'read_key',
    'sign_files',
    'verify_files',
]

SIGNATURES_FILE = '.signatures.json'
# keys.go: a key configured without an algorithm is RS256.
DEFAULT_ALG = 'RS256'
# bundle.go (defaultHashingAlg): OPA signs every file with SHA-256.
HASH_ALG = 'SHA-256'
# sign.go: the only signer (and verify.go the only verifier) OPA has
# without plugins; opa build writes its name into .signatures.json.
_DEFAULT_PLUGIN = '_default'


def sign_files(
    files: Mapping[str, bytes],
    key: bytes,
    alg: str = DEFAULT_ALG,
    key_id: str | None = None,
    scope: str | None = None,
) -> bytes:
    """The ``.signatures.json`` of a bundle made of files.

    files: name (as in the tarball) -> content, ``.manifest`` included;
    a ``.signatures.json`` among them is left out, as OPA leaves it out.
    key_id goes in the JWT's ``kid`` header and, as ``opa build`` does for
    older OPAs, its ``keyid`` claim; scope in its ``scope`` claim.  RSA and
    HMAC signatures are deterministic, so the same files give the same
    bytes; ECDSA signatures are random by design.

    :raises BundleSignatureError: a bad key or algorithm, or a file that
        cannot be hashed (named).
    """
    check_alg(alg)
    private = signing_key(key, alg)
    names = sorted(
        (n.removeprefix('/') for n in files if not is_signatures_file(n)),
        key=_listing_order,
    )
    by_name = {n.removeprefix('/'): c for n, c in files.items()}
    claims: dict[str, Any] = {
        'files': [
            {
                'name': name,
                'hash': hash_file(name, by_name[name], HASH_ALG),
                'algorithm': HASH_ALG,
            }
            for name in names
        ]
    }
    headers = {}
    if key_id:
        headers['kid'] = key_id
        # sign.go (generateToken): the deprecated keyid claim as well.
        claims['keyid'] = key_id
    if scope:
        claims['scope'] = scope
    # The claims in sign.go's order (FileInfo's fields: name, hash,
    # algorithm), compact, like jwx's.
    payload = json.dumps(claims, separators=(',', ':'))
    try:
        token = jwt.PyJWS().encode(
            payload.encode('utf-8'),
            private,
            algorithm=alg,
            headers=headers or None,
        )
    except (jwt.PyJWTError, ValueError, TypeError) as e:
        raise BundleSignatureError(f'cannot sign with {alg}: {e}') from e
    # bundle.go (writeSignatures): indented by one space, no newline.
    document = {'signatures': [token], 'plugin': _DEFAULT_PLUGIN}
    return json.dumps(document, indent=1).encode('utf-8')


def _listing_order(name: str) -> tuple[int, str]:
    """bundle.go (GenerateSignature, hashBundleFiles) lists modules,
    then data, then the manifest.  Order does not matter to verifiers;
    following it makes our JWT opa build's, byte for byte."""
    if name == '.manifest':
        return 2, name
    return int(is_structured(name)), name


def _signatures_of(files: Mapping[str, bytes]) -> tuple[str, set[str]]:
    """The one JWT of the bundle's signatures file; that file's names."""
    found = {n for n in files if is_signatures_file(n)}
    if not found:
        raise BundleSignatureError(f'bundle missing {SIGNATURES_FILE} file')
    if len(found) > 1:
        # bundle.go (preProcessBundle): any file of that base name.
        raise BundleSignatureError(
            f'bundle contains multiple signatures files: {sorted(found)}'
        )
    (name,) = found
    try:
        document = json.loads(files[name])
        tokens = document.get('signatures') or []
        plugin = document.get('plugin') or _DEFAULT_PLUGIN
    except (ValueError, AttributeError) as e:
        raise BundleSignatureError(f'{name}: not a JSON object: {e}') from e
    if plugin != _DEFAULT_PLUGIN:
        raise BundleSignatureError(
            f'{name}: signed by the OPA plugin {plugin!r}, which oslo.opa '
            f'cannot verify'
        )
    # verify.go (VerifyBundleSignature): exactly one JWT.
    if not isinstance(tokens, list) or len(tokens) != 1:
        raise BundleSignatureError(
            f'{name}: expected exactly one JWT in "signatures"'
        )
    if not isinstance(tokens[0], str):
        raise BundleSignatureError(f'{name}: its JWT is not a string')
    return tokens[0], found


def _unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The JWT's header and claims, before its signature is checked
    (verify.go reads both first, to pick the key by its id)."""
    try:
        header_b64, payload_b64, _ = token.split('.')
        parts = []
        for part in (header_b64, payload_b64):
            raw = base64.urlsafe_b64decode(part + '=' * (-len(part) % 4))
            parts.append(json.loads(raw))
    except (ValueError, binascii.Error) as e:
        raise BundleSignatureError(
            f'{SIGNATURES_FILE}: malformed JWT: {e}'
        ) from e
    header, claims = parts
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise BundleSignatureError(f'{SIGNATURES_FILE}: malformed JWT')
    return header, claims


def _check_token(
    token: str, key: bytes, alg: str, key_id: str | None, scope: str | None
) -> dict[str, Any]:
    """The claims of token, once its key id, signature and scope are
    those expected (verify.go, verifyJWTSignature)."""
    header, claims = _unverified(token)
    # verify.go: the kid header, else the deprecated keyid claim.
    named = header.get('kid') or claims.get('keyid') or None
    if key_id is not None and named != key_id:
        raise BundleSignatureError(
            f'{SIGNATURES_FILE}: signed with key id {named!r}, '
            f'expected {key_id!r}'
        )
    # OPA verifies with the algorithm configured for the key, whatever
    # the header says; a header that disagrees can only fail, so say so.
    if header.get('alg') != alg:
        raise BundleSignatureError(
            f'{SIGNATURES_FILE}: signed with {header.get("alg")!r}, '
            f'expected {alg}'
        )
    public = verifying_key(key, alg)
    try:
        jwt.PyJWS().decode_complete(token, public, algorithms=[alg])
    except jwt.InvalidSignatureError as e:
        raise BundleSignatureError(
            f'{SIGNATURES_FILE}: the JWT signature does not verify with '
            f'the {alg} key given'
        ) from e
    except (jwt.PyJWTError, ValueError, TypeError) as e:
        raise BundleSignatureError(
            f'{SIGNATURES_FILE}: cannot verify its JWT with the {alg} key '
            f'given: {e}'
        ) from e
    # verify.go: the scope claim must equal the scope configured, both
    # possibly empty.
    signed_scope = claims.get('scope') or ''
    if signed_scope != (scope or ''):
        raise BundleSignatureError(
            f'{SIGNATURES_FILE}: scope mismatch: signed for '
            f'{signed_scope!r}, expected {scope or ""!r}'
        )
    return claims


def _signed_files(claims: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    listed = claims.get('files')
    if not isinstance(listed, list) or not all(
        isinstance(f, dict) and isinstance(f.get('name'), str) for f in listed
    ):
        raise BundleSignatureError(
            f'{SIGNATURES_FILE}: its JWT has no valid "files" claim'
        )
    # verify.go: a map by name, so a name listed twice keeps the last.
    return {f['name']: f for f in listed}


def verify_files(
    files: Mapping[str, bytes],
    key: bytes,
    alg: str | None = None,
    key_id: str | None = None,
    scope: str | None = None,
) -> None:
    """Check a bundle's signature as OPA does before activating it.

    files: every file of the bundle (names as in the tarball), its
    ``.signatures.json`` included.  key: the public key (PEM; a private
    key or certificate also does) or HMAC secret; alg: its algorithm,
    RS256 when None, as in OPA's keys config.  key_id: the id the
    signature must name (its ``kid`` header, else ``keyid`` claim), as when
    OPA picks the key by the id the bundle names; None: any.  scope: the
    ``scope`` claim required (None: none).

    :raises BundleSignatureError: one line naming what is wrong: no or a
        malformed signature, another key, algorithm, key id or scope, a
        file changed, missing or not signed.
    """
    alg = alg or DEFAULT_ALG
    check_alg(alg)
    token, skipped = _signatures_of(files)
    claims = _check_token(token, key, alg, key_id, scope)
    signed = _signed_files(claims)
    # bundle.go (Reader.Read): each file read must be signed, with the
    # same hash; then no signed file may be left over.
    for name in sorted(n for n in files if n not in skipped):
        # bundle.go: tarball paths are read with one leading / trimmed.
        path = name.removeprefix('/')
        entry = signed.pop(path, None)
        if entry is None:
            raise BundleSignatureError(
                f'file {path} not included in bundle signature'
            )
        algorithm = entry.get('algorithm')
        if not algorithm:
            raise BundleSignatureError(
                f'no hashing algorithm provided for file {path}'
            )
        digest = hash_file(path, files[name], algorithm)
        if not isinstance(entry.get('hash'), str) or not _same(
            entry['hash'], digest
        ):
            raise BundleSignatureError(
                f'{path}: digest mismatch (signed {entry.get("hash")}, '
                f'got {digest})'
            )
    if signed:
        raise BundleSignatureError(
            f'file(s) {", ".join(sorted(signed))} specified in bundle '
            f'signatures but not found in the target bundle'
        )


def _same(signed_hex: str, digest_hex: str) -> bool:
    """verify.go compares the decoded bytes: the case of hex is free."""
    try:
        signed = bytes.fromhex(signed_hex)
    except ValueError:
        return False
    return hmac.compare_digest(signed, bytes.fromhex(digest_hex))
