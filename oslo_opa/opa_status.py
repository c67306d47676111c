"""What a running OPA holds (``oslo-opa status``).

``status``
    OPA's health, the bundles it has activated and their revisions, and
    whether every rule of a manifest resolves (its path is a boolean).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from oslo_opa import manifest as manifest_mod
from oslo_opa.bundle import bundle_files
from oslo_opa.errors import PolicyLoadError
from oslo_opa.opa_rest import call, error_line
from oslo_opa.overlay import Overlays


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
    # The directory's bundle revisions: library mode ('include': with the
    # helper library; 'exclude': without it) -> revision.
    local_revisions: dict[str, str] = dataclasses.field(default_factory=dict)

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
    code, data = call(client, 'GET', '/health')
    healthy = code == 200
    health = 'healthy' if healthy else error_line(code, data)
    code, _ = call(client, 'GET', '/health?bundles')
    bundles_ready = code == 200
    bundles: dict[str, dict[str, Any]] = {}
    code, data = call(client, 'GET', '/v1/data/system/bundles')
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
        report.bundles_error = error_line(code, data)
    if manifest is None:
        return report
    for mode in ('include', 'exclude'):
        try:
            report.local_revisions[mode] = json.loads(
                bundle_files(directory, mode, overlays=overlays)['.manifest']
            )['revision']
        except PolicyLoadError:
            pass
    report.rules = len(manifest.rules)
    for name, entry in manifest.rules.items():
        body = json.dumps(
            {'input': {'credentials': {}, 'target': {}, 'rule': name}}
        ).encode('utf-8')
        code, data = call(client, 'POST', f'/v1/data/{entry.path}', body)
        try:
            value = json.loads(data).get('result') if code == 200 else None
        except (ValueError, AttributeError):
            value = None
        if isinstance(value, bool):
            report.resolved += 1
        else:
            report.unresolved.append(name)
    return report
