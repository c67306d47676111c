"""OPA bundles of a converted directory (``oslo-opa bundle``).

``build``
    An OPA bundle (``.tar.gz``) of the directory's Rego modules (test
    modules left out) and, optionally, data files merged into one
    ``data.json``.  Its ``.manifest`` has ``roots`` (the service's package
    prefix, the helper library's package, the packages of hand-written
    modules, the data keys) and a ``revision`` derived from the content,
    so the same conversion always gives the same revision and the same
    bytes.  OPA refuses two bundles with overlapping roots, so one OPA
    serving several services loads each service's bundle built with
    ``library='exclude'`` and the library once, ``library='only'``.
    Overlays go in under ``overlay/``, with the root ``oslo_opa/overlay``:
    in one OPA they apply to every service, so they ship in one bundle.
    Each service's bundle also carries its batch rule (``batch.py``).

    A bundle with the library (``library='include'``) also carries the
    conversion's ``manifest.json`` and, with ``prebuilt``, its compiled
    fast bundles (``bundles/*.rbb``), so that the same file serves OPA
    and the embedded driver (``bundle_url``, ``bundle_fetch.py``).  OPA
    ignores both: in a bundle only ``data.json``/``data.yaml`` files are
    data (checked with OPA 1.22: ``opa run --bundle`` and ``opa build
    -b`` load neither, and the roots need not cover them).

    Given a signing key, it is signed as ``opa build --signing-key``
    signs (``bundle_signing``): a ``.signatures.json`` that ``opa run
    --verification-key`` checks before activating it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from oslo_opa import atomic, batch
from oslo_opa import manifest as manifest_mod
from oslo_opa.engine import RegoPolicy
from oslo_opa.errors import PolicyLoadError
from oslo_opa.overlay import Overlays
from oslo_opa.policy_files import load_data, read_modules

LIBRARY_ROOT = 'oslo_opa/lib'
OVERLAY_ROOT = 'oslo_opa/overlay'
# Where overlay files go in a bundle, and under a push's ids.
OVERLAY_DIR = 'overlay'
LIBRARY_MODES = ('include', 'exclude', 'only')
PREBUILT_DIR = 'bundles/'
_PACKAGE = re.compile(r'^[ \t]*package[ \t]+([^\s#]+)', re.MULTILINE)


def check_compiles(
    directory: str, data: Any = None, overlays: Overlays | None = None
) -> None:
    """Compile directory whole, with the overlays, in regopy.

    :raises PolicyLoadError: naming the file and line that does not
        compile, or the overlay refused.
    """
    RegoPolicy(directory, data=data, overlays=overlays).validate()


def overlay_files(overlays: Overlays | None) -> dict[str, str]:
    """Each overlay file under ``overlay/`` by its base name (and, when
    two share one, the position of its directory): name -> text."""
    if not overlays:
        return {}
    names: dict[str, str] = {}
    paths = sorted(overlays.files)
    bases = [os.path.basename(p) for p in paths]
    for n, (path, base) in enumerate(zip(paths, bases, strict=True)):
        name = base if bases.count(base) == 1 else f'{n}-{base}'
        names[f'{OVERLAY_DIR}/{name}'] = overlays.files[path]
    return names


def _package_path(text: str, name: str) -> list[str]:
    found = _PACKAGE.search(text)
    if not found:
        raise PolicyLoadError(f'{name}: no package declaration')
    package = found.group(1)
    if package.startswith('data.'):
        package = package[5:]
    # Stop at the first ref that is not a plain name (a["b"]).
    plain = re.match(
        r'[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*', package
    )
    if not plain:
        raise PolicyLoadError(f'{name}: cannot read its package {package!r}')
    return plain.group(0).split('.')


def _minimal_roots(roots: Iterable[list[str]]) -> list[str]:
    """Roots without those under another root, as OPA paths."""
    kept: list[list[str]] = []
    for root in sorted({tuple(r) for r in roots}, key=len):
        if not any(list(root[: len(k)]) == k for k in kept):
            kept.append(list(root))
    return sorted('/'.join(r) for r in kept)


def bundle_files(
    directory: str,
    library: str = 'include',
    data_paths: Sequence[str] = (),
    revision: str | None = None,
    overlays: Overlays | None = None,
    prebuilt: bool = False,
) -> dict[str, bytes]:
    """The files of directory's bundle, ``.manifest`` included.

    overlays go in under ``overlay/`` (root ``oslo_opa/overlay``), with
    any library mode: one OPA serving several services holds one set.
    With the library, ``manifest.json`` goes in too (for the embedded
    driver) and, with prebuilt, the fast bundles it lists.

    :raises PolicyLoadError: not a converted directory, unreadable data,
        overlays given for a conversion whose rules do not consult them.
    """
    if library not in LIBRARY_MODES:
        raise ValueError(f'library must be one of {LIBRARY_MODES}')
    manifest = manifest_mod.load(directory)
    modules = read_modules(directory)
    prefix = manifest.package_prefix.split('.')
    files: dict[str, bytes] = {}
    roots: list[list[str]] = []
    for rel, text in sorted(modules.items()):
        is_library = rel in manifest.library
        if (library == 'exclude' and is_library) or (
            library == 'only' and not is_library
        ):
            continue
        path = _package_path(text, os.path.join(directory, rel))
        if path[: len(prefix)] == prefix:
            roots.append(prefix)
        elif path[:2] == LIBRARY_ROOT.split('/'):
            roots.append(path[:2])
        else:
            roots.append(path)
        files[rel.replace(os.sep, '/')] = text.encode('utf-8')
    if library != 'only':
        # The rule the http driver asks for several decisions at once.
        name = batch.file_name(manifest.package_prefix)
        text = batch.module(manifest.package_prefix, manifest)
        files[name] = text.encode('utf-8')
        roots.append(batch.package(manifest.package_prefix).split('.'))
    if overlays:
        if not manifest.overlay_hooks:
            raise PolicyLoadError(
                f'{directory}: converted by an oslo.opa without overlays '
                f'(its rules do not consult them): convert the policy again'
            )
        for name, text in overlay_files(overlays).items():
            files[name] = text.encode('utf-8')
        roots.append(list(OVERLAY_ROOT.split('/')))
    if data_paths and library != 'only':
        data = load_data(data_paths)
        if data:
            files['data.json'] = json.dumps(
                data, sort_keys=True, separators=(',', ':')
            ).encode('utf-8')
            roots.extend([key] for key in data)
    if not files:
        raise PolicyLoadError(f'{directory}: no Rego modules to bundle')
    if library == 'include':
        files.update(_embedded_files(directory, manifest, prebuilt))
    if revision is None:
        digest = hashlib.sha256()
        for name in sorted(files):
            if name.startswith(PREBUILT_DIR):
                # Derived from the modules, and manifest.json holds their
                # SHA-256: with or without them, the same revision.
                continue
            digest.update(name.encode('utf-8') + b'\0')
            digest.update(files[name] + b'\0')
        label = (
            'oslo_opa-lib' if library == 'only' else manifest.package_prefix
        )
        revision = f'{label}-{digest.hexdigest()[:16]}'
    bundle_manifest = {
        'revision': revision,
        'roots': _minimal_roots(roots),
        'rego_version': 1,
        'metadata': {
            'oslo_opa': {
                'package_prefix': manifest.package_prefix,
                'rules': 0 if library == 'only' else len(manifest.rules),
                'library': library != 'exclude',
            }
        },
    }
    files['.manifest'] = json.dumps(
        bundle_manifest, indent=1, sort_keys=True
    ).encode('utf-8')
    return files


def _embedded_files(
    directory: str, manifest: manifest_mod.Manifest, prebuilt: bool
) -> dict[str, bytes]:
    """What the embedded driver needs beside the modules: manifest.json
    and (prebuilt) the fast bundles it lists."""
    names = [manifest_mod.MANIFEST]
    if prebuilt:
        names += sorted(
            str(entry['file'])
            for entry in (manifest.prebuilt.get('fast') or {}).values()
        )
    found = {}
    for name in names:
        path = os.path.join(directory, name)
        try:
            with open(path, 'rb') as f:
                found[name] = f.read()
        except OSError as e:
            raise PolicyLoadError(f'{path}: cannot read: {e}') from e
    return found


def tarball(files: Mapping[str, bytes]) -> bytes:
    """files (name -> content) as a bundle's ``.tar.gz``, the same bytes
    for the same files."""
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode='wb', mtime=0) as gz:
        with tarfile.open(
            fileobj=gz, mode='w', format=tarfile.PAX_FORMAT
        ) as tar:
            for name in sorted(files):
                info = tarfile.TarInfo(name)
                info.size = len(files[name])
                info.mode = 0o644
                info.mtime = 0
                tar.addfile(info, io.BytesIO(files[name]))
    return raw.getvalue()


def build(
    directory: str,
    output: str,
    library: str = 'include',
    data_paths: Sequence[str] = (),
    revision: str | None = None,
    validate: bool = True,
    overlays: Overlays | None = None,
    prebuilt: bool = False,
    signing_key: bytes | None = None,
    signing_alg: str = 'RS256',
    key_id: str | None = None,
    scope: str | None = None,
) -> dict[str, Any]:
    """Write directory's bundle to output (atomically); its manifest.

    signing_key (PEM private key, or HMAC secret) signs it with
    signing_alg, naming key_id and scope (``bundle_signing.sign_files``):
    every file, manifest.json and the prebuilt fast bundles included.
    The same input always gives the same bytes (but for an ECDSA
    signature, random by design).

    :raises PolicyLoadError: not a converted directory, or it does not
        compile (validate).
    :raises BundleSignatureError: a key that cannot sign.
    """
    if validate:
        check_compiles(directory, load_data(data_paths), overlays)
    files = bundle_files(
        directory, library, data_paths, revision, overlays, prebuilt
    )
    if signing_key is not None:
        # Imported here: only signed bundles need PyJWT and cryptography.
        from oslo_opa import bundle_signing

        files[bundle_signing.SIGNATURES_FILE] = bundle_signing.sign_files(
            files, signing_key, signing_alg, key_id, scope
        )
    atomic.write_file(output, tarball(files))
    return json.loads(files['.manifest'])
