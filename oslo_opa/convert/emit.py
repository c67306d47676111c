"""Write a conversion to disk: modules, manifest, delegation file.

The output directory is built in a temporary sibling directory and
renamed into place, so a failed conversion leaves nothing half-written.

Layout::

    DIR/manifest.json              rule name -> query, REST path, ...
    DIR/policy.yaml                delegation file: every rule -> opa:<name>
    DIR/oslo_opa/*.rego            the helper library
    DIR/<prefix path>/<slug>.rego  one module per rule
    DIR/<prefix path>/<slug>.fast.rego  its boolean fast path
    DIR/<prefix path>/<slug>.batch.rego  the fast path's batch form
    DIR/<prefix path>/<slug>_test.rego  its generated tests (testgen/)
    DIR/bundles/*.rbb              fast bundles, compiled (prebuilt.py)
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from importlib import resources
from typing import Any

import yaml

from oslo_opa.convert import naming, prebuilt
from oslo_opa.convert.compile import Conversion
from oslo_opa.errors import ConversionError

MANIFEST = 'manifest.json'
DELEGATION = 'policy.yaml'
MANIFEST_VERSION = 1


def library_files() -> dict[str, str]:
    """The helper library: relative path -> Rego text (tests excluded)."""
    root = resources.files('oslo_opa') / 'rego'
    out = {}
    for pkg_dir in sorted(root.iterdir(), key=lambda p: p.name):
        if not pkg_dir.is_dir():
            continue
        for f in sorted(pkg_dir.iterdir(), key=lambda p: p.name):
            if f.name.endswith('.rego') and not f.name.endswith('_test.rego'):
                out[f'{pkg_dir.name}/{f.name}'] = f.read_text('utf-8')
    if not out:
        raise ConversionError('the oslo.opa Rego library is not installed')
    return out


def module_path(package: str) -> str:
    """The file a package's module is written to, relative to DIR."""
    return package.replace('.', '/') + '.rego'


def fast_module_path(package: str) -> str:
    """The file a package's fast path is written to, relative to DIR.

    No slug holds a dot, so it never clashes with a rule's module.
    """
    return package.replace('.', '/') + '.fast.rego'


def batch_module_path(package: str) -> str:
    """The file a package's batch form is written to, relative to DIR."""
    return package.replace('.', '/') + '.batch.rego'


def module_digest(text: str) -> str:
    """The digest the manifest records, to tell hand-edited modules."""
    return hashlib.sha256(text.encode('utf-8')).hexdigest()


def manifest(conv: Conversion, scope_types: dict[str, Any]) -> dict:
    """The manifest document for a conversion."""
    rules = {}
    for name, rule in conv.rules.items():
        rules[name] = {
            'query': rule.query,
            'path': rule.path,
            'package': rule.package,
            'module': module_path(rule.package),
            'sha256': module_digest(rule.module),
            'fast_module': fast_module_path(rule.package),
            'fast_sha256': module_digest(rule.fast_module),
            'batch_module': batch_module_path(rule.package),
            'batch_sha256': module_digest(rule.batch_module),
            'check_str': rule.check_str,
            'match': naming.encode_match(name),
            'deps': rule.deps,
            'target_keys': rule.target_keys,
            'credentials': rule.credentials,
            'dotted_credentials': rule.dotted_credentials,
            'dotted_paths': rule.dotted_paths,
            'ascii_lowering': rule.ascii_lowering,
            'fast_entry': rule.fast_entry,
            'scope_types': scope_types.get(name),
        }
    library_sha256 = {
        name: module_digest(text)
        for name, text in sorted(library_files().items())
    }
    return {
        'version': MANIFEST_VERSION,
        'package_prefix': conv.prefix,
        # Names this conversion's content in decision logs and metrics.
        'revision': content_revision(conv.prefix, rules, library_sha256),
        'default_rule': conv.default_rule,
        'library': sorted(library_files()),
        # What the library files held when written: a loader trusts the
        # files that still match and compiles only the others.
        'library_sha256': library_sha256,
        'overlay_hooks': True,
        # What oslo.policy warns about deprecated rules on loading this
        # configuration: the opa check warns it in turn (the delegation
        # file would silence it).
        'deprecations': conv.deprecations,
        # The fast paths' comparisons walk lists of scalars: the embedded
        # driver may send such credentials to them.
        'fast_lists': True,
        # Each fast module decides roles that raise (_rr_decision).
        'fast_raising_roles': True,
        'rules': rules,
    }


def content_revision(
    prefix: str, rules: dict[str, dict], library_sha256: dict[str, str]
) -> str:
    """``<prefix>-<16 hex digits>``: the same for the same conversion
    (rules, check strings, modules and library), different otherwise."""
    digest = hashlib.sha256()
    for name in sorted(rules):
        entry = rules[name]
        for part in (name, entry['sha256'], entry['fast_sha256']):
            digest.update(part.encode('utf-8') + b'\0')
    for name in sorted(library_sha256):
        digest.update(f'{name}\0{library_sha256[name]}\0'.encode())
    return f'{prefix}-{digest.hexdigest()[:16]}'


def delegation_policy(conv: Conversion) -> str:
    """The policy file that hands every rule to the ``opa`` check."""
    header = (
        '# Generated by oslo-opa convert: every rule is decided by the\n'
        '# converted Rego.  Point [oslo_policy] policy_file at this file.\n'
    )
    body = {name: f'opa:{naming.encode_match(name)}' for name in conv.rules}
    # allow_unicode=False: PyYAML writes some characters (NEL, LS) raw,
    # and they do not read back as written; escapes always do.
    return header + yaml.safe_dump(
        body, default_flow_style=False, sort_keys=False, allow_unicode=False
    )


def render(
    conv: Conversion,
    scope_types: dict[str, Any],
    tests: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Every output file: relative path -> text.

    :param tests: generated test modules, relative path -> text.
    """
    files = dict(library_files())
    for rule in conv.rules.values():
        files[module_path(rule.package)] = rule.module
        files[fast_module_path(rule.package)] = rule.fast_module
        files[batch_module_path(rule.package)] = rule.batch_module
    for rel, text in (tests or {}).items():
        if rel in files:
            raise ConversionError(f'{rel}: a test module would replace it')
        files[rel] = text
    files[MANIFEST] = (
        json.dumps(manifest(conv, scope_types), indent=2, ensure_ascii=False)
        + '\n'
    )
    files[DELEGATION] = delegation_policy(conv)
    return files


def write(
    conv: Conversion,
    output_dir: str,
    scope_types: dict[str, Any],
    tests: Mapping[str, str] | None = None,
) -> None:
    """Atomically replace output_dir with the conversion's files.

    An existing output_dir is replaced only when it is empty or holds a
    previous conversion (a ``manifest.json``).
    """
    output_dir = os.path.abspath(output_dir)
    if os.path.exists(output_dir):
        if not os.path.isdir(output_dir):
            raise ConversionError(f'{output_dir}: exists and is not a dir')
        if os.listdir(output_dir) and not os.path.exists(
            os.path.join(output_dir, MANIFEST)
        ):
            raise ConversionError(
                f'{output_dir}: not empty and not an oslo-opa output '
                f'directory; refusing to replace it'
            )
    files = render(conv, scope_types, tests)
    parent = os.path.dirname(output_dir)
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(
            prefix=f'.{os.path.basename(output_dir)}.', dir=parent
        )
    except OSError as e:
        raise ConversionError(f'{output_dir}: cannot write: {e}') from e
    try:
        for rel, text in files.items():
            path = os.path.join(tmp, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, 'w', encoding='utf-8') as f:
                f.write(text)
        # The fast bundles, compiled; the manifest says where.
        doc = json.loads(files[MANIFEST])
        doc['prebuilt'] = prebuilt.build(tmp, files)
        with open(os.path.join(tmp, MANIFEST), 'w', encoding='utf-8') as f:
            f.write(json.dumps(doc, indent=2, ensure_ascii=False) + '\n')
        # mkdtemp makes it private; the service must be able to read it.
        os.chmod(tmp, 0o755)  # noqa: S103
        _swap(tmp, output_dir)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ConversionError(f'{output_dir}: cannot write: {e}') from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap(new: str, target: str) -> None:
    """Put new in target's place.

    On Linux the two directories are exchanged in one step
    (renameat2 RENAME_EXCHANGE), so target never goes missing: a service
    reading it while an operator converts again sees the old files or
    the new ones.  Elsewhere, two renames leave a short gap.
    """
    if not os.path.exists(target):
        os.rename(new, target)
        return
    if _exchange(new, target):
        shutil.rmtree(new, ignore_errors=True)
        return
    old = tempfile.mkdtemp(
        prefix=f'.{os.path.basename(target)}.old.',
        dir=os.path.dirname(target),
    )
    os.rmdir(old)
    os.rename(target, old)
    try:
        os.rename(new, target)
    except OSError:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: str, b: str) -> bool:
    """Atomically exchange paths a and b; False where unsupported."""
    if not sys.platform.startswith('linux'):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    rc = renameat2(
        _AT_FDCWD,
        os.fsencode(a),
        _AT_FDCWD,
        os.fsencode(b),
        _RENAME_EXCHANGE,
    )
    return rc == 0
