"""Erasing secrets from decision events before they leave the process.

Two rules, applied to a copy of the event (the input the service passed
is never changed):

* a key naming a secret (a token, password or secret, at any depth of
  ``input``, in any letter case) is erased, whatever its value;
* each JSON pointer configured (``decision_log_mask``), in the style of
  OPA's ``system.log.mask``: ``/input/credentials/user_id`` erases that
  member.

Like OPA, an event lists what was erased in ``erased``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from oslo_opa.errors import OsloOpaError

# Parts of a key that name a secret: auth_token, X-Auth-Token, password,
# application_credential_secret, os_passwd, client_secret ...
SECRET_WORDS = ('token', 'password', 'passwd', 'secret')


def is_secret(key: str) -> bool:
    """Whether key names a secret."""
    lowered = key.lower()
    return any(word in lowered for word in SECRET_WORDS)


def parse_pointer(text: str) -> tuple[str, ...]:
    """A JSON pointer's reference tokens (RFC 6901), or OsloOpaError."""
    if not text.startswith('/') or text == '/':
        raise OsloOpaError(
            f'decision_log_mask: {text!r} is not a JSON pointer to a '
            f'member (it must start with "/", for example '
            f'/input/credentials/user_id)'
        )
    return tuple(
        part.replace('~1', '/').replace('~0', '~')
        for part in text[1:].split('/')
    )


def _pointer(parts: Iterable[str]) -> str:
    return '/' + '/'.join(
        p.replace('~', '~0').replace('/', '~1') for p in parts
    )


class Mask:
    """Erases secrets and configured pointers from events."""

    def __init__(self, pointers: Sequence[str] = ()) -> None:
        self.pointers = [parse_pointer(p) for p in pointers]

    def apply(self, event: dict[str, Any]) -> dict[str, Any]:
        """event with its secrets erased (a copy where anything is)."""
        erased: list[str] = []
        out = dict(event)
        for name in ('input', 'oslo_opa'):
            if name in out:
                out[name] = _scrub(out[name], (name,), erased)
        for parts in self.pointers:
            out = _erase(out, parts, erased)
        if erased:
            out['erased'] = sorted(set(erased))
        return out


def _scrub(value: Any, at: tuple[str, ...], erased: list[str]) -> Any:
    """value without members whose key names a secret (copied on the
    way down only where something goes)."""
    if isinstance(value, Mapping):
        kept: dict[str, Any] = {}
        changed = False
        for key, item in value.items():
            if isinstance(key, str) and is_secret(key):
                erased.append(_pointer(at + (key,)))
                changed = True
                continue
            new = _scrub(item, at + (str(key),), erased)
            changed = changed or new is not item
            kept[key] = new
        return kept if changed else value
    if isinstance(value, list):
        items = [
            _scrub(item, at + (str(i),), erased)
            for i, item in enumerate(value)
        ]
        if any(a is not b for a, b in zip(items, value, strict=True)):
            return items
    return value


def _erase(
    doc: dict[str, Any], parts: tuple[str, ...], erased: list[str]
) -> dict[str, Any]:
    """doc without the member at parts, if it has one (copying the dicts
    on the way down)."""
    head, rest = parts[0], parts[1:]
    if not isinstance(doc, Mapping) or head not in doc:
        return doc
    out = dict(doc)
    if not rest:
        del out[head]
        erased.append(_pointer(parts))
        return out
    inner = out[head]
    if isinstance(inner, Mapping):
        trail: list[str] = []
        out[head] = _erase(dict(inner), rest, trail)
        erased.extend(_pointer((head,)) + t for t in trail)
    return out
