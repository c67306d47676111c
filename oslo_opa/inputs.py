"""The input document a converted policy reads, built from Python values.

``{"credentials": {...}, "target": {...}, "rule": "<name>"}``.  JSON
cannot hold every Python value, and the converted Rego compares values
the way oslo.policy does, with Python's ``str()``; so values are mapped
deterministically, and never raise:

* ``str``, ``bool``, ``None`` and ``int`` (64-bit: both engines print
  those exactly) are kept; larger ints and floats are sent as their
  ``str()``, which is all oslo.policy compares them by.
* mappings become objects; keys that are not strings are dropped (a
  string lookup can never find them in oslo.policy either).
* lists become arrays: oslo.policy walks them.  Tuples, sets and
  everything else (datetimes, UUIDs, model objects) are sent as their
  ``str()``: oslo.policy compares and substitutes them by it, and walking
  into one raises in both.
* ``roles`` keeps only what decides whether oslo.policy's RoleCheck
  raises (see :func:`_roles`): a tuple or set of roles is iterated.
* a string holding a NUL character cannot reach the embedded engine
  intact: :class:`UnrepresentableInput` is raised and the decision
  denies.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Both engines hold and print 64-bit integers exactly.
_MIN_INT, _MAX_INT = -(2**63), 2**63 - 1


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
        return value if _MIN_INT <= value <= _MAX_INT else str(value)
    if isinstance(value, float):
        return str(value)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if isinstance(k, str):
                if '\x00' in k:
                    raise UnrepresentableInput('a key holds a NUL character')
                out[k] = to_json(v)
        return out
    if isinstance(value, list):
        return [to_json(v) for v in value]
    # A tuple or a set is not walked by oslo.policy (only lists are): it
    # is compared, and substituted, by its str(), and walking into it
    # raises, as walking into a string does in the Rego.
    try:
        text = str(value)
    except Exception:  # noqa: BLE001 - a broken __str__ must not crash
        text = f'<unprintable {type(value).__name__}>'
    return to_json(text)


def _roles(value: Any) -> Any:
    """creds["roles"] as oslo.policy's RoleCheck can use it.

    RoleCheck iterates the value and lower-cases each item, so a value
    (or item) that JSON carries as it is stays: a non-string item raises
    in both, a string or a mapping is iterated in both.  A float, an int
    beyond 64 bits or another object would become its str(), a string on
    which the Rego does not raise where oslo.policy does: it becomes
    None instead, which raises in both.
    """
    if isinstance(value, Mapping) and not all(
        isinstance(k, str) for k in value
    ):
        return None  # RoleCheck lower-cases every key: one raises
    if isinstance(value, (str, Mapping)):
        return to_json(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        items = (
            sorted(value, key=str)
            if isinstance(value, (set, frozenset))
            else value
        )
        return [_role_item(v) for v in items]
    return _role_item(value)


def _role_item(value: Any) -> Any:
    if isinstance(value, float) or (
        isinstance(value, int)
        and not isinstance(value, bool)
        and not _MIN_INT <= value <= _MAX_INT
    ):
        return None
    if value is None or isinstance(
        value, (str, bool, int, Mapping, list, tuple, set, frozenset)
    ):
        return to_json(value)
    return None


def credentials_json(creds: Mapping[str, Any]) -> dict[str, Any]:
    """The credentials part of the input document."""
    out = to_json(creds)
    if 'roles' in creds:
        out['roles'] = _roles(creds['roles'])
    return out


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


def document(
    creds: Mapping[str, Any], target: Mapping[str, Any], rule: str
) -> dict:
    """The input document from credentials already as a dict.

    :raises UnrepresentableInput: when a value cannot be carried.
    """
    return {
        'credentials': credentials_json(creds),
        'target': to_json(target),
        'rule': rule,
    }


def build_input(creds: Any, target: Mapping[str, Any], rule: str) -> dict:
    """The input document for one decision (creds: a dict or a context).

    :raises UnrepresentableInput: when a value cannot be carried.
    """
    return document(credentials_dict(creds), target, rule)


def project(
    doc: Mapping[str, Any],
    keys: tuple[list[str], list[str]],
    rule: bool = True,
) -> dict[str, Any]:
    """An input document with only the credential and target keys named
    (and the rule, unless rule is false)."""
    creds, target = doc['credentials'], doc['target']
    out = {
        'credentials': {k: creds[k] for k in keys[0] if k in creds},
        'target': {k: target[k] for k in keys[1] if k in target},
    }
    if rule:
        out['rule'] = doc.get('rule')
    return out
