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


def _tree(doc: Any, text_ok: Any, lists: bool = True) -> bool:
    """Every string in doc passes text_ok, every key is ASCII, every
    value is of a JSON type (anything else is not vouched for), and,
    unless lists, no value is a list."""
    stack = [doc]
    while stack:
        value = stack.pop()
        kind = type(value)
        if kind is str:
            if not text_ok(value):
                return False
        elif kind is dict:
            for key, item in value.items():
                if not (type(key) is str and key.isascii()):
                    return False
                stack.append(item)
        elif kind is list:
            if not lists:
                return False
            stack.extend(value)
        elif kind not in (bool, int) and value is not None:
            return False
    return True


def all_ascii(doc: Any) -> bool:
    """Every string in doc, keys included, is ASCII (and every value is
    of a JSON type: anything else is not vouched for)."""
    return _tree(doc, str.isascii)


# The fast bundle variants, by the input's shape (see fast_profile).
FULL = 0  # the library as written
SIMPLE = 1  # ASCII and plain: ASCII_CASEFOLD, PLAIN_COMPARE, ASCII_ROLES
LOWER = 2  # SIMPLE, and every role lower case already: LOWER_ROLES
ASCII = 3  # ASCII, not plain ("True", "1", lists): ASCII_CASEFOLD only
# Not a variant: FULL, asked for _rr_decision (roles that raise).
RAISING = 4


def _plain_ascii(text: str) -> bool:
    return (
        text.isascii()
        and text not in _CONFUSABLE
        and not text.lstrip('-').isdigit()
    )


def _plain_tree(value: Any) -> bool:
    """value is dicts of plain ASCII strings, ints, booleans and None
    (keys ASCII too), and no list."""
    return _tree(value, _plain_ascii, lists=False)


def _roles_list(value: Any) -> list | None:
    """The roles as the list oslo.policy's role check iterates, or None.

    ``role:x`` lower-cases each item of ``creds["roles"]`` as it
    iterates it: a string's characters, a dict's keys.  Only role checks
    read roles on the fast path (a generic check on ``roles`` says
    "maybe"), so those forms are sent as the list they iterate as.
    """
    kind = type(value)
    if kind is list:
        return value
    if kind is str:
        return list(value)
    if kind is dict and all(type(k) is str for k in value):
        return list(value)
    return None


_SCALARS = (str, int, bool, type(None))
# What oslo.policy's role check cannot iterate, or lower-case.
_NOT_ROLES = (int, bool, float, type(None), list, dict)


def _roles_raise(value: Any) -> bool:
    """Whether every role check oslo.policy reaches raises on value:
    it cannot be iterated, or it is a list holding a non-string (the
    check lower-cases every item before it compares)."""
    kind = type(value)
    if kind is list:
        odd = [r for r in value if not isinstance(r, str)]
        return bool(odd) and all(type(r) in _NOT_ROLES for r in odd)
    return kind in (int, bool, float) or value is None


def fast_profile(
    doc: Mapping[str, Any],
    lists: bool = True,
    raising: bool = True,
    dotted: frozenset[str] = frozenset(),
    paths: tuple[tuple[str, ...], ...] = (),
) -> tuple[int, tuple | None, Mapping[str, Any], bool] | None:
    """What the fast path needs to know of a decision's input: one pass
    over it (and, for an input that is not plain, one more to tell ASCII).

    None when the fast path cannot decide it: roles are not a list of
    strings (once a string or a dict of them is sent as the list of
    what ``role:`` iterates), another credential is an object or a list
    holding one, a target value is a list, an object or a float.
    Otherwise (the fast variant the input may use, a key equal for
    equal fast-path documents or None, the credentials to send): types
    are in the key, as True and 1 are equal in Python and not in Rego.
    Values of a subclass of str, int or bool take the full variant and
    no key; roles of a subclass of list or str take the three-valued
    path.

    Credentials other than roles reach the fast path only through
    generic checks, which oslo.policy walks into a list item by item,
    and the fast path's comparisons (``lib.str_eq``, ``lib.cred_is``,
    ``lib.cred_eq``) walk a list of scalars the same way.  A list
    holding one string is sent as that string (oslo.context's
    ``service_roles`` on a service's token): the plain variants then
    apply.  Longer lists take the ASCII or full variant, whose
    comparisons walk them, if lists (the fast paths were converted so,
    and the library is as written); else the three-valued path.
    Hand-edited rules have no fast path.

    Roles that make every role check raise (None, a number, a list
    holding a non-string) give RAISING, if raising (the fast modules
    then decide with ``_rr_decision``, which reads no role), and no key.
    Credentials in dotted, which the rule reads only through dotted
    paths (``token.domain.id``), may hold anything: the fast path walks
    them, and says "maybe" where the walk is not plain dicts.  The last
    item says whether every one of paths (the rule's dotted paths) walks
    only dicts to its end or a missing key here: then the fast path
    need not look (``input.walked``).
    """
    try:
        parts = (doc['credentials'].items(), doc['target'].items())
    except (KeyError, AttributeError, TypeError):
        return None
    simple = lower = keyed = True
    roles_raise = False
    key = []
    folded = {}
    for is_creds, items in zip((True, False), parts, strict=True):
        part = []
        for name, value in items:
            kind = type(value)
            if is_creds and name == 'roles':
                roles = _roles_list(value)
                for role in roles or ():
                    if type(role) is not str:
                        if not isinstance(role, str):
                            roles = None
                            break
                        simple = keyed = False
                    elif simple and not _plain_ascii(role):
                        simple = False
                    elif lower and not role.islower() and role != role.lower():
                        lower = False
                if roles is None:
                    if not (raising and _roles_raise(value)):
                        return None
                    roles_raise = True
                    keyed = False
                    part.append((name, kind, None))
                    continue
                if roles is not value:
                    folded[name] = roles
                value = (kind, tuple(roles))
            elif kind is str:
                if simple and not _plain_ascii(value):
                    simple = False
            elif is_creds and name in dotted and kind in (dict, list):
                # A walk compares what it ends on with str_eq or cred_is:
                # a list there needs the full variant, which walks it.
                keyed = False
                if simple and not _plain_tree(value):
                    simple = False
            elif is_creds and kind is list:
                if len(value) == 1 and type(value[0]) is str:
                    value = folded[name] = value[0]
                    kind = str
                    if simple and not _plain_ascii(value):
                        simple = False
                elif value:
                    if not (lists and all(type(v) in _SCALARS for v in value)):
                        return None
                    simple = False
                    value = tuple((type(v), v) for v in value)
                else:
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
    creds = doc['credentials']
    if folded:
        creds = {**creds, **folded}
    if roles_raise:
        variant = RAISING
    elif simple:
        variant = LOWER if lower else SIMPLE
    elif all_ascii(creds) and all_ascii(doc['target']):
        variant = ASCII
    else:
        variant = FULL
    walked = bool(paths) and all(_clean_walk(creds, p) for p in paths)
    # walked depends on the rule's paths as well as on the document: it
    # is part of what the key stands for (the engine reuses a converted
    # document for every rule sent an equal key).
    return variant, (*key, walked) if keyed else None, creds, walked


def _clean_walk(creds: Mapping[str, Any], path: tuple[str, ...]) -> bool:
    """Whether oslo.policy's walk of path through creds meets only
    dicts until a key is missing or it ends, on a scalar or a list of
    scalars: no raise, no branch, no str() of a container."""
    value: Any = creds
    for i, segment in enumerate(path):
        if i and type(value) is not dict:
            return False
        if segment not in value:
            return True
        value = value[segment]
    if type(value) is list:
        return all(type(v) not in (list, dict) for v in value)
    return type(value) is not dict
