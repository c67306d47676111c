"""One request to OPA's REST API, and OPA's error answers as one line:
what ``oslo-opa push`` and ``status`` send through the http driver's
transport."""

from __future__ import annotations

import json
from typing import Any

from oslo_opa.errors import OsloOpaError


class OpaError(OsloOpaError):
    """OPA refused a request or could not be reached."""


def error_line(status: int, data: bytes) -> str:
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


def call(
    client: Any,
    method: str,
    path: str,
    body: bytes | None = None,
    content_type: str = 'application/json',
) -> tuple[int, bytes]:
    """(status, body) of one request through client, the http driver's
    transport.

    :raises OpaError: OPA could not be reached.
    """
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
