"""Which bundle revision each policy engine of a fleet runs
(``oslo-opa status --fleet``).

``survey``
    Ask every instance, concurrently, which revision of each bundle it
    has activated, and whether its last download was refused.
``verdict``
    The revision most instances run, and the stragglers: instances that
    run another, none, or cannot be asked.

An instance is named by a URL, and its scheme picks the reader
(``READERS``):

``http://``, ``https://``, ``unix://``
    An OPA's REST API: ``GET /health?bundles`` (every bundle activated),
    ``GET /v1/data/system/bundles`` (each activated bundle's manifest,
    so its revision: always there, whatever OPA's configuration), and
    ``GET /v1/status`` when OPA's status plugin is on (``--status-url``
    in ``oslo-opa opa-config``): each bundle's last error, such as a
    refused signature.
``file://``
    A status file, for engines that have no REST API: the embedded
    driver (or anything else) writes the same JSON document as OPA's
    ``GET /v1/status`` answers, ``{"bundles": {NAME: {"active_revision":
    ..., "last_successful_activation": ..., "code": ..., "message": ...,
    "errors": [...]}}}``, replacing it atomically whenever it activates a
    bundle or fails to.  A missing file is an unreachable instance.

Another scheme is added by putting a reader in ``READERS``.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import json
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any

from oslo_opa import atomic
from oslo_opa.opa_rest import OpaError, call, error_line


@dataclasses.dataclass
class Instance:
    """What one engine of the fleet said."""

    url: str
    reachable: bool = False
    # Every configured bundle activated (None: the reader cannot tell).
    ready: bool | None = None
    # Bundle name -> active revision.
    revisions: dict[str, str] = dataclasses.field(default_factory=dict)
    # Why it could not be asked, or its bundles' last errors.
    problems: list[str] = dataclasses.field(default_factory=list)

    @property
    def key(self) -> tuple[tuple[str, str], ...]:
        """What must agree across the fleet: every bundle's revision."""
        return tuple(sorted(self.revisions.items()))


@dataclasses.dataclass
class Verdict:
    # The revisions most reachable instances run (None: no majority).
    majority: tuple[tuple[str, str], ...] | None
    agreeing: list[Instance]
    # (instance, why it is a straggler)
    stragglers: list[tuple[Instance, str]]

    @property
    def ok(self) -> bool:
        return not self.stragglers


def bundle_errors(bundles: dict[str, Any]) -> list[str]:
    """The errors in OPA's status document's ``bundles`` section."""
    out = []
    for name, info in sorted((bundles or {}).items()):
        info = info or {}
        if not (info.get('code') or info.get('message')):
            continue
        text = info.get('message') or info.get('code')
        # The embedded driver's status file repeats its one reason in
        # message and errors: said once.
        details = [
            detail
            for detail in (
                str(e.get('message', e)) if isinstance(e, dict) else str(e)
                for e in info.get('errors') or []
            )
            if detail != text
        ]
        if details:
            text += ': ' + '; '.join(details[:3])
        out.append(f'bundle {name}: {text}')
    return out


def _read_status_document(inst: Instance, doc: Any) -> None:
    """Fill inst from a status document (OPA's /v1/status shape)."""
    if not isinstance(doc, dict) or not isinstance(doc.get('bundles'), dict):
        inst.problems.append('not a status document (no "bundles")')
        return
    for name, info in sorted(doc['bundles'].items()):
        revision = (info or {}).get('active_revision')
        if revision:
            inst.revisions[name] = revision
    inst.problems.extend(bundle_errors(doc['bundles']))


def read_opa(url: str, client_factory: Callable[[str], Any]) -> Instance:
    """One OPA, through its REST API."""
    inst = Instance(url)
    client = client_factory(url)
    try:
        code, data = call(client, 'GET', '/health?bundles')
        inst.reachable = True
        if code in (200, 500):
            # 500: OPA's answer while a configured bundle is not activated.
            inst.ready = code == 200
        else:
            # Refused (an authorization policy): not evidence either way.
            inst.problems.append(f'health: {error_line(code, data)}')
        code, data = call(client, 'GET', '/v1/data/system/bundles')
        if code != 200:
            inst.problems.append(
                f'cannot list bundles: {error_line(code, data)}'
            )
        else:
            try:
                result = json.loads(data).get('result') or {}
            except (ValueError, AttributeError):
                result = {}
            for name, info in sorted(result.items()):
                manifest = (info or {}).get('manifest') or {}
                if manifest.get('revision'):
                    inst.revisions[name] = manifest['revision']
        # Only with the status plugin on; then it says why a download
        # was refused (a bad signature, a bundle that does not compile).
        code, data = call(client, 'GET', '/v1/status')
        if code == 200:
            try:
                doc = json.loads(data).get('result') or {}
            except (ValueError, AttributeError):
                doc = {}
            inst.problems.extend(bundle_errors(doc.get('bundles') or {}))
    except OpaError as e:
        inst.reachable = False
        inst.problems.append(str(e))
    finally:
        client.close()
    return inst


def read_status_file(url: str, client_factory: Any = None) -> Instance:
    """An engine that writes its status to a file (``file:///path``)."""
    inst = Instance(url)
    path = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
    try:
        with open(path, encoding='utf-8') as f:
            doc = json.load(f)
    except OSError as e:
        inst.problems.append(f'cannot read {path}: {e.strerror}')
        return inst
    except ValueError as e:
        inst.reachable = True
        inst.problems.append(f'{path}: not JSON: {e}')
        return inst
    inst.reachable = True
    _read_status_document(inst, doc)
    return inst


def write_status_file(path: str, bundles: dict[str, dict[str, Any]]) -> None:
    """Replace path with a status file ``file://path`` reads: bundles
    is OPA's status ``bundles`` section, bundle name -> at least
    ``active_revision``, and after a refused bundle ``code``,
    ``message`` and ``errors`` (a list of strings or ``{"message":
    ...}``).  Atomic: a reader sees the old file or the new one.
    """
    text = json.dumps({'bundles': bundles}, indent=1, sort_keys=True)
    atomic.write_file(path, text.encode('utf-8'))


READERS: dict[str, Callable[[str, Any], Instance]] = {
    'http': read_opa,
    'https': read_opa,
    'unix': read_opa,
    'file': read_status_file,
}


def scheme(url: str) -> str:
    return urllib.parse.urlsplit(url).scheme


def survey(
    urls: Sequence[str],
    client_factory: Callable[[str], Any],
    workers: int = 16,
) -> list[Instance]:
    """Every instance's answer, in the order of urls.

    :raises ValueError: a URL whose scheme no reader knows.
    """
    for url in urls:
        if scheme(url) not in READERS:
            raise ValueError(
                f'{url}: scheme must be one of {", ".join(sorted(READERS))}'
            )
    with concurrent.futures.ThreadPoolExecutor(
        max_workers=max(1, min(workers, len(urls)))
    ) as pool:
        futures = [
            pool.submit(READERS[scheme(url)], url, client_factory)
            for url in urls
        ]
        return [f.result() for f in futures]


def verdict(instances: Sequence[Instance]) -> Verdict:
    """The majority's revisions and who differs.

    The majority is the revision set that more reachable instances run
    than any other; on a tie there is none, and every instance not
    unanimous with all others is a straggler.
    """
    counts = collections.Counter(
        i.key for i in instances if i.reachable and i.revisions
    )
    ranked = counts.most_common(2)
    majority = None
    if ranked and (len(ranked) == 1 or ranked[0][1] > ranked[1][1]):
        majority = ranked[0][0]
    agreeing: list[Instance] = []
    stragglers: list[tuple[Instance, str]] = []
    for inst in instances:
        if not inst.reachable:
            stragglers.append((inst, 'unreachable'))
        elif not inst.revisions:
            stragglers.append((inst, 'no bundle activated'))
        elif majority is None:
            stragglers.append((inst, 'no majority'))
        elif inst.key != majority:
            stragglers.append((inst, 'differs from the majority'))
        elif inst.ready is False:
            stragglers.append((inst, 'a bundle is not activated'))
        else:
            agreeing.append(inst)
    return Verdict(majority, agreeing, stragglers)


def revision_text(key: Sequence[tuple[str, str]] | None) -> str:
    if not key:
        return '-'
    if len(key) == 1:
        return key[0][1]
    return ', '.join(f'{name}={rev}' for name, rev in key)


def render(instances: Sequence[Instance], result: Verdict) -> str:
    """A table, one instance a line, then the verdict."""
    why = {id(i): reason for i, reason in result.stragglers}
    rows = [('INSTANCE', 'STATE', 'REVISION', 'NOTES')]
    for inst in instances:
        state = why.get(id(inst), 'ok')
        rows.append(
            (
                inst.url,
                'ok' if state == 'ok' else 'STRAGGLER',
                revision_text(inst.key),
                '; '.join(([] if state == 'ok' else [state]) + inst.problems),
            )
        )
    widths = [max(len(r[n]) for r in rows) for n in range(3)]
    lines = [
        '  '.join(r[n].ljust(widths[n]) for n in range(3)) + '  ' + r[3]
        for r in rows
    ]
    lines = [line.rstrip() for line in lines]
    total = len(instances)
    if result.ok:
        lines.append(
            f'fleet: all {total} agree on {revision_text(result.majority)}'
        )
    else:
        lines.append(
            f'fleet: {len(result.stragglers)} of {total} straggling'
            + (
                f'; the majority runs {revision_text(result.majority)}'
                if result.majority
                else '; no revision has a majority'
            )
        )
    return '\n'.join(lines)
