"""The input document a converted policy reads, built from Python values.

``{"credentials": {...}, "target": {...}, "rule": "<name>"}``.  JSON
cannot hold every Python value, and the converted Rego compares values
the way oslo.policy does, with Python's ``str()``; so values are mapped
deterministically, and never raise:

* ``str``, ``bool``, ``None`` and ``int`` (within +/-2**53) are kept;
  larger ints and floats are sent as their ``str()``, which is all that
  oslo.policy ever compares them by.
* mappings become objects; keys that are not strings are dropped (a
  string lookup can never find them in oslo.policy either).
* lists, tuples, sets and other iterables of the standard containers
  become arrays (sets sorted by ``str()``), so roles and lists walked by
  ``_find_in_dict`` work.  oslo.policy walks only real lists; a tuple
  in the credentials is walked here too (documented difference).
* anything else (datetimes, UUIDs, model objects) is sent as ``str()``.
* a string holding a NUL character cannot reach the embedded engine
  intact: :class:`UnrepresentableInput` is raised and the decision
  denies.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_SAFE_INT = 2**53


class UnrepresentableInput(ValueError):
    """A value that no engine input can carry faithfully."""


def to_json(value: Any) -> Any:
    """Convert one Python value as described in the module docstring."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        if '\x00' in value:
            raise UnrepresentableInput('a string holds a NUL character')
        return value
    if isinstance(value, int):
        return value if -_SAFE_INT <= value <= _SAFE_INT else str(value)
    if isinstance(value, float):
        return str(value)
    if isinstance(value, Mapping):
        return {k: to_json(v) for k, v in value.items() if isinstance(k, str)}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return [to_json(v) for v in sorted(value, key=str)]
    try:
        text = str(value)
    except Exception:  # noqa: BLE001 - a broken __str__ must not crash
        text = f'<unprintable {type(value).__name__}>'
    return to_json(text)


def credentials_dict(creds: Any) -> dict[str, Any]:
    """Credentials as oslo.policy's Enforcer.enforce sees them.

    A RequestContext becomes its ``to_policy_values()``, and a truthy
    ``system_scope`` is copied to ``system``, as enforce() does.
    """
    if hasattr(creds, 'to_policy_values'):
        creds = dict(creds.to_policy_values().items())
    else:
        creds = dict(creds)
    if creds.get('system_scope'):
        creds['system'] = creds.get('system_scope')
    return creds


def build_input(creds: Any, target: Mapping[str, Any], rule: str) -> dict:
    """The input document for one decision.

    :raises UnrepresentableInput: when a value cannot be carried.
    """
    return {
        'credentials': to_json(credentials_dict(creds)),
        'target': to_json(target),
        'rule': rule,
    }
