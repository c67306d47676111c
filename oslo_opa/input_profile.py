"""What the embedded engine's fast path needs to know of an input.

One pass over a decision's input document tells whether the fast path
can decide it (``lib.tidy`` holds), which variant of the fast bundle is
exact for it, and a key under which equal documents convert once (see
``engine.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_CONFUSABLE = frozenset(('True', 'False', 'None'))


def all_ascii(doc: Any) -> bool:
    """Every string in doc, keys included, is ASCII (and every value is
    of a JSON type: anything else is not vouched for)."""
    stack = [doc]
    while stack:
        value = stack.pop()
        kind = type(value)
        if kind is str:
            if not value.isascii():
                return False
        elif kind is dict:
            for key, item in value.items():
                if not (type(key) is str and key.isascii()):
                    return False
                stack.append(item)
        elif kind is list:
            stack.extend(value)
        elif kind not in (bool, int) and value is not None:
            return False
    return True


# The fast bundle variants, by the input's shape (see fast_profile).
FULL = 0  # the library as written
SIMPLE = 1  # ASCII and plain: ASCII_CASEFOLD, PLAIN_COMPARE, ASCII_ROLES
LOWER = 2  # SIMPLE, and every role lower case already: LOWER_ROLES


def _plain_ascii(text: str) -> bool:
    return (
        text.isascii()
        and text not in _CONFUSABLE
        and not text.lstrip('-').isdigit()
    )


def fast_profile(
    doc: Mapping[str, Any],
) -> tuple[int, tuple | None, Mapping[str, Any]] | None:
    """What the fast path needs to know of a decision's input, in one pass.

    None when the fast path cannot decide it: lib.tidy does not hold
    (roles not a list of strings, another credential an object or a
    list, a target value a list, an object or a float), once credentials
    holding a list of one string are folded to that string.  Otherwise
    (the fast variant the input may use, a key equal for equal fast-path
    documents or None, the credentials to send): types are in the key,
    as True and 1 are equal in Python and not in Rego.  Values of a
    subclass of str, int or bool take the full variant and no key.

    The fold is exact for the converter's fast paths: they read a
    credential other than roles only through generic checks, which
    oslo.policy walks into a list item by item, so ``["service"]``
    decides every such check as ``"service"`` does (oslo.context's
    ``service_roles`` on a service's token).  Hand-edited rules have no
    fast path.
    """
    try:
        parts = (doc['credentials'].items(), doc['target'].items())
    except (KeyError, AttributeError, TypeError):
        return None
    simple = lower = keyed = True
    key = []
    folded = {}
    for is_creds, items in zip((True, False), parts, strict=True):
        part = []
        for name, value in items:
            kind = type(value)
            if is_creds and name == 'roles':
                if not isinstance(value, list):
                    return None
                for role in value:
                    if type(role) is not str:
                        if not isinstance(role, str):
                            return None
                        simple = keyed = False
                    elif simple and not _plain_ascii(role):
                        simple = False
                    elif lower and not role.islower() and role != role.lower():
                        lower = False
                if kind is not list:
                    simple = keyed = False
                value = tuple(value)
            elif kind is str:
                if simple and not _plain_ascii(value):
                    simple = False
            elif (
                is_creds
                and kind is list
                and len(value) == 1
                and type(value[0]) is str
            ):
                value = folded[name] = value[0]
                kind = str
                if simple and not _plain_ascii(value):
                    simple = False
            elif is_creds and kind is list and not value:
                value = ()  # tidy: a check walks it and finds nothing
            elif isinstance(value, (list, dict)) or (
                not is_creds and isinstance(value, float)
            ):
                return None
            elif kind is not bool and kind is not int and value is not None:
                simple = keyed = False
            if simple and not (type(name) is str and name.isascii()):
                simple = False
            part.append((name, kind, value))
        key.append(tuple(part))
    variant = (LOWER if lower else SIMPLE) if simple else FULL
    creds = doc['credentials']
    if folded:
        creds = {**creds, **folded}
    return variant, tuple(key) if keyed else None, creds
