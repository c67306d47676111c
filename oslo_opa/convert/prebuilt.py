"""Fast bundles compiled at conversion, for the embedded engine.

Ordinary traffic is decided by each rule's fast bundle (see
``bundler.py``): compiling one costs regopy 1 to 3 ms, loading one it
saved 0.07 ms.  A worker that compiled them on first use paid that on
its first requests (74 bundles for neutron), in every process.  So the
conversion compiles every distinct fast bundle in each of its variants
(as written; ASCII and plain; and with the roles used as sent), with
the same code the engine would run, and saves them in regopy's binary
bundle format under ``bundles/``.  The manifest records each one's file
and SHA-256, and the regopy version that wrote them: a loader uses a
bundle only when both match, and compiles it from the modules otherwise
(see ``engine.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any

import regopy

from oslo_opa import bundler
from oslo_opa import manifest as manifest_mod
from oslo_opa.errors import ConversionError, PolicyLoadError
from oslo_opa.input_profile import FULL

DIRECTORY = 'bundles'


def key(digest: str, variant: int) -> str:
    """The manifest's key for a fast bundle."""
    return f'{digest}/{variant}'


def build(directory: str, files: Mapping[str, str]) -> dict[str, Any]:
    """Compile and save every distinct fast bundle of the conversion whose
    files are being written to directory; the manifest's ``prebuilt``.

    :raises ConversionError: a fast path does not compile.
    """
    manifest = manifest_mod.parse(
        json.loads(files[manifest_mod.MANIFEST]), directory
    )
    modules = {
        rel: text
        for rel, text in files.items()
        if rel.endswith('.rego') and not rel.endswith('_test.rego')
    }
    try:
        b = bundler.Bundler(directory, manifest, modules)
    except PolicyLoadError as e:
        raise ConversionError(str(e)) from e
    saved: dict[str, dict[str, str]] = {}
    os.makedirs(os.path.join(directory, DIRECTORY), exist_ok=True)
    writer = regopy.Interpreter()
    for rule in manifest.rules:
        digest = b.fast_digest.get(rule)
        if digest is None:
            continue
        variants = bundler.VARIANTS if b.ascii_ok[rule] else (FULL,)
        for variant in variants:
            name = key(digest, variant)
            if name in saved:
                continue
            try:
                compiled = b.build_fast(rule, variant)
            except PolicyLoadError as e:
                raise ConversionError(str(e)) from e
            rel = f'{DIRECTORY}/{digest[:32]}-{variant}.rbb'
            path = os.path.join(directory, rel)
            writer.save_bundle(path, compiled, regopy.BundleFormat.Binary)
            with open(path, 'rb') as f:
                digest_of_file = hashlib.sha256(f.read()).hexdigest()
            saved[name] = {'file': rel, 'sha256': digest_of_file}
    return {'regopy': bundler.regopy_version(), 'fast': saved}
