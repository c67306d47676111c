"""Getting a converted directory into OPA through its Policy API
(``oslo-opa push``).

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
"""

from __future__ import annotations

import dataclasses
import json
import os
import urllib.parse
from typing import Any

from oslo_opa import batch
from oslo_opa import manifest as manifest_mod
from oslo_opa.bundle import check_compiles, overlay_files
from oslo_opa.opa_rest import OpaError, call, error_line
from oslo_opa.overlay import Overlays
from oslo_opa.policy_files import read_modules

ID_PREFIX = 'oslo_opa/'
LIBRARY_IDS = 'oslo_opa/library/'


class PushError(OpaError):
    """A push failed; ``restored`` says whether OPA is as it was."""

    def __init__(self, message: str, restored: bool) -> None:
        super().__init__(message)
        self.restored = restored


def _policy_path(policy_id: str) -> str:
    return '/v1/policies/' + urllib.parse.quote(policy_id, safe='/')


def list_policies(client: Any) -> dict[str, str]:
    """Every module OPA holds through the Policy API: id -> text."""
    status, data = call(client, 'GET', '/v1/policies')
    if status != 200:
        raise OpaError(f'GET /v1/policies: {error_line(status, data)}')
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
    status, data = call(
        client,
        'PUT',
        _policy_path(policy_id),
        text.encode('utf-8'),
        content_type='text/plain',
    )
    if status != 200:
        raise OpaError(f'PUT {policy_id}: {error_line(status, data)}')


def _delete(client: Any, policy_id: str) -> None:
    status, data = call(client, 'DELETE', _policy_path(policy_id))
    if status not in (200, 404):
        raise OpaError(f'DELETE {policy_id}: {error_line(status, data)}')


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
        check_compiles(directory, overlays=overlays)
    own = f'{ID_PREFIX}{manifest.package_prefix}/'
    library_ids = {}
    service_ids = {}
    for rel, text in sorted(modules.items()):
        rel = rel.replace(os.sep, '/')
        if rel in manifest.library:
            library_ids[LIBRARY_IDS + rel] = text
        else:
            service_ids[own + rel] = text
    for name, text in overlay_files(overlays).items():
        service_ids[own + name] = text
    prefix = manifest.package_prefix
    service_ids[own + batch.file_name(prefix)] = batch.module(prefix, manifest)
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
