"""Whether a downloaded bundle may be activated by the embedded driver.

Three checks, in OPA's order, before anything is written or compiled:

signature
    With a verification key, ``.signatures.json`` must sign exactly the
    bundle's files with that key (``bundle_signing.verify_files``: a
    changed, missing or extra file, or another key, is refused).  Without
    one, a signed bundle is refused too: OPA 1.22 without
    ``--verification-key`` refuses it ("verification key not provided"),
    and silently trusting it would hide a missing setting.
roots
    The ``.manifest`` roots (default ``[""]``, everything) must not
    overlap one another, must hold every module's package and every data
    path, as OPA checks them (``bundle.go``: "manifest roots ... do not
    permit ...").
contents
    What the embedded driver needs: the conversion's ``manifest.json``
    (``oslo-opa bundle`` with the library), and data only in a top-level
    ``data.json``.

:func:`check` returns what the activation needs: the bundle's revision
and roots, and the files to write out as a converted directory.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from typing import Any

from oslo_opa import batch
from oslo_opa import manifest as manifest_mod
from oslo_opa.errors import OsloOpaError

SIGNATURES = '.signatures.json'
BUNDLE_MANIFEST = '.manifest'
DATA_FILES = ('data.json', 'data.yaml', 'data.yml')
_PACKAGE = re.compile(r'^[ \t]*package[ \t]+(.+?)[ \t]*(?:#.*)?$', re.M)
_SEGMENT = re.compile(
    r'\.?([A-Za-z_][A-Za-z0-9_]*)|\[\s*"((?:[^"\\]|\\.)*)"\s*\]'
)


class BundleRefused(OsloOpaError):
    """A bundle that must not be activated; the message says why."""


@dataclasses.dataclass(frozen=True)
class Checked:
    """A bundle that passed :func:`check`.

    :ivar revision: its ``.manifest`` revision ('' when none).
    :ivar conversion: its manifest.json's (the conversion's) revision.
    :ivar roots: its roots.
    :ivar files: what to write out as the converted directory.
    :ivar signed: whether a signature was verified.
    """

    revision: str
    conversion: str
    roots: tuple[str, ...]
    files: dict[str, bytes]
    signed: bool


def check(
    files: Mapping[str, bytes],
    key: bytes | None = None,
    scope: str | None = None,
) -> Checked:
    """Check a bundle's files (tarball member name -> content), the
    signature with key (its algorithm as :func:`key_alg` says); scope:
    the ``scope`` claim the signature must carry (None: none), as in
    OPA's ``keys`` configuration.

    :raises BundleRefused: naming the first problem.
    """
    signed = _check_signature(files, key, scope)
    meta = _bundle_manifest(files)
    roots = _roots(meta)
    for name, content in files.items():
        if name.endswith('.rego'):
            path = package_path(content, name)
            if not _contained(roots, path):
                raise BundleRefused(
                    f'manifest roots {list(roots)} do not permit package '
                    f'{".".join(path) or "(none)"} in {name}'
                )
        elif name.rsplit('/', 1)[-1] in DATA_FILES:
            _check_data(roots, name, content)
    if manifest_mod.MANIFEST not in files:
        raise BundleRefused(
            f'no {manifest_mod.MANIFEST}: the embedded driver needs a '
            f'bundle written by oslo-opa bundle with the library (not '
            f'--library exclude/only, nor re-built by opa build)'
        )
    try:
        doc = json.loads(files[manifest_mod.MANIFEST])
        conversion = manifest_mod.parse(doc, '.')
    except (ValueError, OsloOpaError) as e:
        raise BundleRefused(f'{manifest_mod.MANIFEST}: {e}') from e
    for name in files:
        if name.rsplit('/', 1)[-1] in DATA_FILES and name != 'data.json':
            raise BundleRefused(
                f'{name}: the embedded driver reads data from a top-level '
                f'data.json only (as oslo-opa bundle writes it)'
            )
    # The batch rule serves OPA's clients only; compiled in, it would be
    # a hand-written module in every rule's full bundle.
    skip = {SIGNATURES, batch.file_name(conversion.package_prefix)}
    return Checked(
        revision=str(meta.get('revision') or ''),
        conversion=conversion.revision,
        roots=roots,
        files={n: c for n, c in files.items() if n not in skip},
        signed=signed,
    )


def key_alg(key: bytes) -> str:
    """The algorithm a verification key file implies: HS256 for a secret,
    RS256 for an RSA key, ES256/384/512 for an EC key by its curve (the
    defaults of ``opa build --signing-alg`` for each kind of key)."""
    if not key.lstrip().startswith(b'-----BEGIN'):
        return 'HS256'
    from oslo_opa import bundle_keys

    try:
        public = bundle_keys.verifying_key(key, 'ES256')
    except OsloOpaError:
        return 'RS256'  # not EC: RSA, or refused by verify_files
    size = getattr(getattr(public, 'curve', None), 'key_size', 256)
    return {384: 'ES384', 521: 'ES512'}.get(size, 'ES256')


def _check_signature(
    files: Mapping[str, bytes],
    key: bytes | None,
    scope: str | None = None,
) -> bool:
    if key is None:
        if SIGNATURES in files:
            raise BundleRefused(
                'the bundle is signed but [oslo_opa] '
                'bundle_verification_key is not set (OPA refuses it too)'
            )
        return False
    if SIGNATURES not in files:
        raise BundleRefused(f'not signed (no {SIGNATURES})')
    from oslo_opa import bundle_signing

    try:
        bundle_signing.verify_files(files, key, alg=key_alg(key), scope=scope)
    except OsloOpaError as e:
        raise BundleRefused(f'bad signature: {e}') from e
    return True


def _bundle_manifest(files: Mapping[str, bytes]) -> dict[str, Any]:
    raw = files.get(BUNDLE_MANIFEST)
    if raw is None:
        return {}
    try:
        meta = json.loads(raw)
    except ValueError as e:
        raise BundleRefused(f'{BUNDLE_MANIFEST}: not JSON: {e}') from e
    if not isinstance(meta, dict):
        raise BundleRefused(f'{BUNDLE_MANIFEST}: not an object')
    return meta


def _roots(meta: Mapping[str, Any]) -> tuple[str, ...]:
    """The roots as OPA reads them: trimmed of ``/``, default ``[""]``,
    none inside another."""
    raw = meta.get('roots')
    if raw is None:
        return ('',)
    if not isinstance(raw, list) or not all(isinstance(r, str) for r in raw):
        raise BundleRefused(f'{BUNDLE_MANIFEST}: roots must be strings')
    roots = tuple(r.strip('/') for r in raw)
    for i, a in enumerate(roots):
        for b in roots[i + 1 :]:
            if _root_contains(a, _split(b)) or _root_contains(b, _split(a)):
                raise BundleRefused(
                    f'{BUNDLE_MANIFEST}: overlapped roots {a!r} and {b!r}'
                )
    return roots


def _split(path: str) -> list[str]:
    return path.split('/') if path else []


def _root_contains(root: str, path: list[str]) -> bool:
    # OPA: the root "" contains everything; else segment by segment.
    if root == '':
        return True
    parts = root.split('/')
    return parts == path[: len(parts)] and len(parts) <= len(path)


def _contained(roots: tuple[str, ...], path: list[str]) -> bool:
    return any(_root_contains(r, path) for r in roots)


def package_path(content: bytes, name: str) -> list[str]:
    """A module's package as data path segments (``a.b["c"]`` -> a, b, c).

    :raises BundleRefused: no readable package declaration.
    """
    text = content.decode('utf-8', errors='replace')
    found = _PACKAGE.search(text)
    if not found:
        raise BundleRefused(f'{name}: no package declaration')
    ref = found.group(1).strip()
    parts: list[str] = []
    pos = 0
    while pos < len(ref):
        seg = _SEGMENT.match(ref, pos)
        if not seg or (pos == 0 and ref.startswith('.')):
            raise BundleRefused(f'{name}: cannot read its package {ref!r}')
        parts.append(seg.group(1) or json.loads(f'"{seg.group(2)}"'))
        pos = seg.end()
    if parts[:1] == ['data']:
        parts = parts[1:]
    return parts


def _check_data(roots: tuple[str, ...], name: str, content: bytes) -> None:
    """Every data path must be under a root, or an object on the way to
    one (OPA's depth-first walk of the bundle's data)."""
    prefix = name.split('/')[:-1]
    if name.endswith('.json'):
        try:
            doc = json.loads(content)
        except ValueError as e:
            raise BundleRefused(f'{name}: not JSON: {e}') from e
    else:
        import yaml

        try:
            doc = yaml.safe_load(content)
        except yaml.YAMLError as e:
            raise BundleRefused(f'{name}: not YAML: {e}') from e
    stack: list[tuple[list[str], Any]] = [(prefix, doc)]
    while stack:
        path, node = stack.pop()
        if _contained(roots, path):
            continue
        if isinstance(node, dict) and any(
            _root_contains('/'.join(path), _split(r)) for r in roots
        ):
            stack.extend((path + [str(k)], v) for k, v in node.items())
            continue
        raise BundleRefused(
            f'manifest roots {list(roots)} do not permit data at path '
            f'/{"/".join(path)} ({name})'
        )
