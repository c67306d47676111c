"""Keys for OPA bundle signatures, read as OPA reads them.

Which kinds of key each algorithm takes, and how: OPA's ``v1/bundle``
``keys.go`` (signing) and ``verify.go`` (verifying), ``v1/keys/keys.go``
(a key file is used byte for byte).
"""

from __future__ import annotations

from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from oslo_opa.errors import BundleSignatureError

# What jwx (OPA's JWT library) can sign with, and PyJWT too.
ALGORITHMS = (
    'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512',
    'ES256', 'ES384', 'ES512', 'HS256', 'HS384', 'HS512',
)  # fmt: skip


def read_key(path: str) -> bytes:
    """The bytes of a key file: PEM, or an HMAC secret.

    Nothing is stripped: OPA (``keys.go``, ``NewKeyConfig``) takes a key
    file's bytes as they are, trailing newline included, so the same file
    gives the same HMAC secret to both.

    :raises BundleSignatureError: naming the file that cannot be read.
    """
    try:
        with open(path, 'rb') as f:
            key = f.read()
    except OSError as e:
        raise BundleSignatureError(
            f'{path}: cannot read the key: {e.strerror or e}'
        ) from e
    if not key:
        raise BundleSignatureError(f'{path}: the key file is empty')
    return key


def check_alg(alg: str) -> None:
    if alg not in ALGORITHMS:
        raise BundleSignatureError(
            f'unsupported signing algorithm {alg!r} '
            f'(one of {", ".join(ALGORITHMS)})'
        )


def _is_hmac(alg: str) -> bool:
    return alg.startswith('HS')


def signing_key(key: bytes, alg: str) -> Any:
    """keys.go (GetPrivateKey): an HMAC secret as is, else a PEM
    private key (PKCS#1, PKCS#8 or SEC1)."""
    if _is_hmac(alg):
        return key
    try:
        loaded = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError) as e:
        raise BundleSignatureError(
            f'{alg} needs an unencrypted PEM private key: {e}'
        ) from e
    return _fitting(loaded, alg)


def _fitting(loaded: Any, alg: str) -> Any:
    """loaded, when it is the kind of key alg signs with."""
    kind = rsa.RSAPublicKey if alg[0] in 'RP' else ec.EllipticCurvePublicKey
    public = loaded.public_key() if hasattr(loaded, 'public_key') else loaded
    if not isinstance(public, kind):
        raise BundleSignatureError(
            f'the key given is not an {"RSA" if alg[0] in "RP" else "EC"} '
            f'key, as {alg} needs'
        )
    return loaded


def verifying_key(key: bytes, alg: str) -> Any:
    """verify.go (parseVerificationKey): an HMAC secret as is, else a
    PEM public key, private key (its public half) or certificate."""
    if _is_hmac(alg):
        return key
    loaders = (
        lambda: serialization.load_pem_public_key(key),
        lambda: serialization.load_pem_private_key(key, None).public_key(),
        lambda: x509.load_pem_x509_certificate(key).public_key(),
    )
    for load in loaders:
        try:
            loaded = load()
        except (ValueError, TypeError):
            continue
        return _fitting(loaded, alg)
    raise BundleSignatureError(
        f'{alg} needs a PEM public key, private key or certificate'
    )
