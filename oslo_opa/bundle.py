"""Getting a converted directory into OPA: bundles, the Policy API, status.

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
``push``
    The modules through OPA's Policy API, one ``PUT /v1/policies/<id>``
    each (ids ``oslo_opa/<prefix>/<file>``, the library under
    ``oslo_opa/library/<file>``, shared by every service).  The Policy
    API has no transaction and OPA recompiles everything on each call,
    so atomicity is built around it: the whole directory is compiled
    first (regopy, nothing is sent if it fails); then the library, the
    changed modules and the removal of the service's stale modules are
    applied in that order, and if OPA refuses any step (a compile error
    against what else it holds, a bundle owning the path) every step
    already applied is undone, newest first, so OPA ends as it began.
    Readers may see a mix of old and new modules for the duration of a
    push (a rule at a time); a bundle is swapped atomically instead.
    Putting the new modules under fresh ids and deleting the old ones
    cannot work: a package defined twice has two ``default allow`` and
    does not compile.  Overlays go up with the service's modules.
``status``
    OPA's health, the bundles it has activated and their revisions, and
    whether every rule of a manifest resolves (its path is a boolean).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import os
import re
import tarfile
import tempfile
import urllib.parse
from collections.abc import Iterable, Sequence
from typing import Any

from oslo_opa import batch
from oslo_opa import manifest as manifest_mod
from oslo_opa.engine import RegoPolicy
from oslo_opa.errors import OsloOpaError, PolicyLoadError
from oslo_opa.overlay import Overlays
from oslo_opa.policy_files import load_data, read_modules

LIBRARY_ROOT = 'oslo_opa/lib'
OVERLAY_ROOT = 'oslo_opa/overlay'
# Where overlay files go in a bundle, and under a push's ids.
OVERLAY_DIR = 'overlay'
ID_PREFIX = 'oslo_opa/'
LIBRARY_IDS = 'oslo_opa/library/'
LIBRARY_MODES = ('include', 'exclude', 'only')
_PACKAGE = re.compile(r'^[ \t]*package[ \t]+([^\s#]+)', re.MULTILINE)


def _validate(
    directory: str, data: Any = None, overlays: Overlays | None = None
) -> None:
    """Compile directory whole, with the overlays, in regopy.

    :raises PolicyLoadError: naming the file and line that does not
        compile, or the overlay refused.
    """
    RegoPolicy(directory, data=data, overlays=overlays).validate()


def _overlay_names(overlays: Overlays | None) -> dict[str, str]:
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


class OpaError(OsloOpaError):
    """OPA refused a request or could not be reached."""


class PushError(OpaError):
    """A push failed; ``restored`` says whether OPA is as it was."""

    def __init__(self, message: str, restored: bool) -> None:
        super().__init__(message)
        self.restored = restored


# --- bundles -----------------------------------------------------------------


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
) -> dict[str, bytes]:
    """The files of directory's bundle, ``.manifest`` included.

    overlays go in under ``overlay/`` (root ``oslo_opa/overlay``), with
    any library mode: one OPA serving several services holds one set.

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
        files[name] = batch.module(manifest.package_prefix).encode('utf-8')
        roots.append(batch.package(manifest.package_prefix).split('.'))
    if overlays:
        if not manifest.overlay_hooks:
            raise PolicyLoadError(
                f'{directory}: converted by an oslo.opa without overlays '
                f'(its rules do not consult them): convert the policy again'
            )
        for name, text in _overlay_names(overlays).items():
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
    if revision is None:
        digest = hashlib.sha256()
        for name in sorted(files):
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


def build(
    directory: str,
    output: str,
    library: str = 'include',
    data_paths: Sequence[str] = (),
    revision: str | None = None,
    validate: bool = True,
    overlays: Overlays | None = None,
) -> dict[str, Any]:
    """Write directory's bundle to output (atomically); its manifest.

    The same input always gives the same bytes.

    :raises PolicyLoadError: not a converted directory, or it does not
        compile (validate).
    """
    if validate:
        _validate(directory, load_data(data_paths), overlays)
    files = bundle_files(directory, library, data_paths, revision, overlays)
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
    out_dir = os.path.dirname(os.path.abspath(output))
    fd, tmp = tempfile.mkstemp(prefix='.bundle-', dir=out_dir)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(raw.getvalue())
        os.chmod(tmp, 0o644)
        os.replace(tmp, output)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return json.loads(files['.manifest'])


# --- talking to OPA ---------------------------------------------------------


def _errors(status: int, data: bytes) -> str:
    """OPA's error answer, as one line (compile errors with locations)."""
    try:
        doc = json.loads(data)
    except ValueError:
        return f'HTTP {status}'
    if not isinstance(doc, dict):
        return f'HTTP {status}'
    parts = []
    for err in (doc.get('errors') or [])[:3]:
        loc = err.get('location') or {}
        where = f'{loc.get("file", "")}:{loc.get("row", "")}: '
        parts.append(where + str(err.get('message', '')))
    text = '; '.join(parts) or str(doc.get('message', ''))
    code = doc.get('code', '')
    return f'HTTP {status} {code}: {text}'.strip()


def _call(
    client: Any,
    method: str,
    path: str,
    body: bytes | None = None,
    content_type: str = 'application/json',
) -> tuple[int, bytes]:
    from oslo_opa.drivers.http import TransportError

    try:
        return client.request(
            method,
            path,
            body,
            headers={
                'Content-Type': content_type,
                'Accept': 'application/json',
            },
        )
    except TransportError as e:
        raise OpaError(f'OPA at {client.url}: {e}') from None


def _policy_path(policy_id: str) -> str:
    return '/v1/policies/' + urllib.parse.quote(policy_id, safe='/')


def list_policies(client: Any) -> dict[str, str]:
    """Every module OPA holds through the Policy API: id -> text."""
    status, data = _call(client, 'GET', '/v1/policies')
    if status != 200:
        raise OpaError(f'GET /v1/policies: {_errors(status, data)}')
    try:
        result = json.loads(data).get('result') or []
        return {p['id']: p.get('raw', '') for p in result}
    except (ValueError, AttributeError, KeyError, TypeError) as e:
        raise OpaError('GET /v1/policies: not an OPA answer') from e


@dataclasses.dataclass
class PushReport:
    put: list[str]
    deleted: list[str]
    unchanged: int


def _put(client: Any, policy_id: str, text: str) -> None:
    status, data = _call(
        client,
        'PUT',
        _policy_path(policy_id),
        text.encode('utf-8'),
        content_type='text/plain',
    )
    if status != 200:
        raise OpaError(f'PUT {policy_id}: {_errors(status, data)}')


def _delete(client: Any, policy_id: str) -> None:
    status, data = _call(client, 'DELETE', _policy_path(policy_id))
    if status not in (200, 404):
        raise OpaError(f'DELETE {policy_id}: {_errors(status, data)}')


def push(
    directory: str,
    client: Any,
    validate: bool = True,
    overlays: Overlays | None = None,
) -> PushReport:
    """Upload directory's modules to OPA, all or nothing (see module doc).

    overlays are uploaded with the service's modules (ids
    ``oslo_opa/<prefix>/overlay/...``); a later push without them removes
    them.

    :raises PolicyLoadError: the directory is not a conversion or does
        not compile (OPA untouched).
    :raises PushError: OPA refused a step (everything undone, unless
        ``restored`` is false) or could not be reached.
    """
    manifest = manifest_mod.load(directory)
    modules = read_modules(directory)
    if validate:
        _validate(directory, overlays=overlays)
    own = f'{ID_PREFIX}{manifest.package_prefix}/'
    library_ids = {}
    service_ids = {}
    for rel, text in sorted(modules.items()):
        rel = rel.replace(os.sep, '/')
        if rel in manifest.library:
            library_ids[LIBRARY_IDS + rel] = text
        else:
            service_ids[own + rel] = text
    for name, text in _overlay_names(overlays).items():
        service_ids[own + name] = text
    prefix = manifest.package_prefix
    service_ids[own + batch.file_name(prefix)] = batch.module(prefix)
    try:
        existing = list_policies(client)
    except OpaError as e:
        raise PushError(str(e), restored=True) from None
    # (op, id, new text, old text or None)
    plan: list[tuple[str, str, str | None, str | None]] = []
    unchanged = 0
    for ids in (library_ids, service_ids):
        for policy_id, text in ids.items():
            if existing.get(policy_id) == text:
                unchanged += 1
            else:
                plan.append(('put', policy_id, text, existing.get(policy_id)))
    for policy_id in sorted(existing):
        if policy_id.startswith(own) and policy_id not in service_ids:
            plan.append(('delete', policy_id, None, existing[policy_id]))
    done: list[tuple[str, str, str | None, str | None]] = []
    try:
        _apply_puts(client, [s for s in plan if s[0] == 'put'], done)
        for step in plan:
            if step[0] == 'delete':
                _delete(client, step[1])
                done.append(step)
    except OpaError as e:
        failed = _undo(client, done)
        if failed:
            raise PushError(
                f'{e}; undoing the {len(done)} step(s) already applied '
                f'failed for {", ".join(failed[:5])}: OPA holds a mix of '
                f'old and new modules, push again',
                restored=False,
            ) from None
        raise PushError(
            f'{e} (nothing changed: {len(done)} step(s) undone)',
            restored=True,
        ) from None
    return PushReport(
        put=[s[1] for s in plan if s[0] == 'put'],
        deleted=[s[1] for s in plan if s[0] == 'delete'],
        unchanged=unchanged,
    )


def _apply_puts(client: Any, steps: list, done: list) -> None:
    """Upload steps' modules, each after those it calls.

    OPA compiles a module as it arrives, and refuses one that calls a
    function no module it has defines yet (the library's files call each
    other; a hand-written module may call another): a refused module is
    tried again after the others, until a round makes no progress.

    :raises OpaError: the last refusal of the round that made none.
    """
    pending = steps
    while pending:
        refused: list = []
        error: OpaError | None = None
        for step in pending:
            try:
                _put(client, step[1], step[2])
            except OpaError as e:
                refused.append(step)
                error = e
            else:
                done.append(step)
        if error is not None and len(refused) == len(pending):
            raise error
        pending = refused


def _undo(client: Any, done: list) -> list[str]:
    failed = []
    for op, policy_id, _text, old in reversed(done):
        try:
            if op == 'put' and old is None:
                _delete(client, policy_id)
            else:
                _put(client, policy_id, old)
        except OpaError:
            failed.append(policy_id)
    return failed


# --- status ----------------------------------------------------------------


@dataclasses.dataclass
class Status:
    healthy: bool
    health: str
    bundles_ready: bool | None
    bundles: dict[str, dict[str, Any]]
    bundles_error: str | None = None
    rules: int = 0
    resolved: int = 0
    unresolved: list[str] = dataclasses.field(default_factory=list)
    local_revisions: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.healthy and not self.unresolved


def status(
    client: Any,
    directory: str | None = None,
    overlays: Overlays | None = None,
) -> Status:
    """OPA's health, bundles and (with directory) whether rules resolve;
    the directory's revisions are those of its bundle with overlays.

    :raises OpaError: OPA cannot be reached.
    :raises PolicyLoadError: directory is not a conversion.
    """
    manifest = manifest_mod.load(directory) if directory else None
    code, data = _call(client, 'GET', '/health')
    healthy = code == 200
    health = 'healthy' if healthy else _errors(code, data)
    code, _ = _call(client, 'GET', '/health?bundles')
    bundles_ready = code == 200
    bundles: dict[str, dict[str, Any]] = {}
    code, data = _call(client, 'GET', '/v1/data/system/bundles')
    if code == 200:
        try:
            result = json.loads(data).get('result') or {}
        except (ValueError, AttributeError):
            result = {}
        for name, info in sorted(result.items()):
            man = (info or {}).get('manifest') or {}
            bundles[name] = {
                'revision': man.get('revision', ''),
                'roots': man.get('roots', ['']),
            }
    report = Status(healthy, health, bundles_ready, bundles)
    if code != 200:
        report.bundles_error = _errors(code, data)
    if manifest is None:
        return report
    for mode in ('include', 'exclude'):
        try:
            report.local_revisions.append(
                json.loads(
                    bundle_files(directory, mode, overlays=overlays)[
                        '.manifest'
                    ]
                )['revision']
            )
        except PolicyLoadError:
            pass
    report.rules = len(manifest.rules)
    for name, entry in manifest.rules.items():
        body = json.dumps(
            {'input': {'credentials': {}, 'target': {}, 'rule': name}}
        ).encode('utf-8')
        code, data = _call(client, 'POST', f'/v1/data/{entry.path}', body)
        try:
            value = json.loads(data).get('result') if code == 200 else None
        except (ValueError, AttributeError):
            value = None
        if isinstance(value, bool):
            report.resolved += 1
        else:
            report.unresolved.append(name)
    return report
