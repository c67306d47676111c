"""What the embedded engine's fast path needs to know of an input.

One pass over a decision's input document tells whether the fast path
can decide it (``lib.tidy`` holds), which variant of the fast bundle is
exact for it, and a key under which equal documents convert once (see
``engine.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple


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
SIMPLE = 1  # ASCII, no list: ASCII_CASEFOLD, PLAIN_COMPARE, ASCII_ROLES
LOWER = 2  # SIMPLE, and every role lower case already: LOWER_ROLES
ASCII = 3  # ASCII, with lists: ASCII_CASEFOLD only
# Not a variant: FULL, asked for _rr_decision (roles that raise).
RAISING = 4


_CONFUSABLE = frozenset(('True', 'False', 'None'))


def _plain_ascii(text: str) -> bool:
    """ASCII, and not like the str() of a non-string: for conversions
    whose fast path is sent values as they are."""
    return (
        text.isascii()
        and text not in _CONFUSABLE
        and not text.lstrip('-').isdigit()
    )


# The JSON scalars the fast path is sent as their str(): oslo.policy
# compares credentials and target values by str() alone (see fast_profile).
_STRINGIFIED = (int, bool, type(None))


def _str_tree(value: Any) -> tuple[Any, bool, tuple | None]:
    """value (a dotted credential: dicts, lists, JSON scalars) with each
    int, boolean and None leaf as its str(); whether it holds a list;
    and a key equal for equal trees (types in it, as for the rest), or
    None where a value is of no JSON type (a subclass)."""
    listed = odd = False

    def walk(v: Any) -> tuple[Any, Any]:
        nonlocal listed, odd
        kind = type(v)
        if kind is dict:
            out = {}
            keys = []
            for k, item in v.items():
                out[k], item_key = walk(item)
                keys.append((k, item_key))
            return out, (dict, tuple(keys))
        if kind is list:
            listed = True
            pairs = [walk(item) for item in v]
            return [p[0] for p in pairs], (list, tuple(p[1] for p in pairs))
        if kind in _STRINGIFIED:
            return str(v), (kind, v)
        odd = odd or kind is not str
        return v, (kind, v if kind is str else None)

    sent, key = walk(value)
    return sent, listed or odd, None if odd else key


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


class Profile(NamedTuple):
    """What the fast path needs to know of one input (fast_profile)."""

    # The fast bundle variant exact for it (FULL, SIMPLE, LOWER, ASCII),
    # or RAISING.
    variant: int
    # Equal for equal fast-path documents; None when there is none.
    key: tuple | None
    # The credentials and target to send.
    credentials: Mapping[str, Any]
    # Every dotted path of the rule walks cleanly (input.walked).
    walked: bool
    target: Mapping[str, Any]


def fast_profile(
    doc: Mapping[str, Any],
    lists: bool = True,
    raising: bool = True,
    dotted: frozenset[str] = frozenset(),
    paths: tuple[tuple[str, ...], ...] = (),
) -> Profile | None:
    """What the fast path needs to know of a decision's input: one pass
    over it (and, for an input that is not simple, one more to tell ASCII).

    None when the fast path cannot decide it: roles are not a list of
    strings (once a string or a dict of them is sent as the list of
    what ``role:`` iterates), another credential is an object or a list
    holding one, a target value is a list, an object or a float.
    Otherwise a :class:`Profile`.  Types are in its key, as True and 1
    are equal in Python and not in Rego.  Values of a subclass of str,
    int or bool take the full variant and no key; roles of a subclass
    of list or str take the three-valued path.

    oslo.policy compares a credential or a target value only by its
    str() (``_find_in_dict`` and ``%(key)s``), and so do the fast paths
    of conversions that say ``fast_lists`` (``lib.str_eq``,
    ``lib.cred_is``, ``lib.cred_eq``, ``lib.subst_text``, each a
    function of str() alone): for them (lists), every int, boolean and
    None is sent as its str(), and ``==`` is then str() equality on any
    ASCII input (the SIMPLE and LOWER variants).  Older conversions are
    sent values as they are, and need strings that do not read like a
    non-string's str() ("True", "1") for those variants.

    Credentials other than roles reach the fast path only through
    generic checks, which oslo.policy walks into a list item by item,
    and the fast path's comparisons walk a list of scalars the same
    way.  A list holding one string is sent as that string
    (oslo.context's ``service_roles`` on a service's token): the simple
    variants then apply.  Longer lists take the ASCII or full variant,
    whose comparisons walk them, if lists (the fast paths were converted
    so, and the library is as written); else the three-valued path.
    Hand-edited rules have no fast path.

    Roles that make every role check raise (None, a number, a list
    holding a non-string) give RAISING, if raising (the fast modules
    then decide with ``_rr_decision``, which reads no role), and no key.
    Credentials in dotted, which the rule reads only through dotted
    paths (``token.domain.id``), may hold anything: the fast path walks
    them, and says "maybe" where the walk is not plain dicts.
    ``walked`` says whether every one of paths (the rule's dotted paths)
    walks only dicts, or lists of them, to its end or a missing key
    here: then the fast path need not look (``input.walked``).
    """
    try:
        parts = (doc['credentials'].items(), doc['target'].items())
    except (KeyError, AttributeError, TypeError):
        return None
    # simple: no list, no subclass (and, for older conversions, no
    # string like a non-string's str()); lowered: every string that may
    # be lower-cased (roles, target values) and every key is ASCII.
    simple = lower = lowered = keyed = True
    roles_raise = False
    key = []
    # What is sent in place of the document's values: credentials, target.
    folded: dict[str, Any] = {}
    target_sent: dict[str, Any] = {}
    stringify = lists
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
                        simple = lowered = keyed = False
                    elif lowered and not role.isascii():
                        lowered = False
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
                if stringify:
                    if lowered and not is_creds and not value.isascii():
                        lowered = False
                elif simple and not _plain_ascii(value):
                    simple = False
            elif kind in _STRINGIFIED:
                if stringify:
                    (folded if is_creds else target_sent)[name] = str(value)
            elif is_creds and name in dotted and kind in (dict, list):
                # A walk compares what it ends on with str_eq or cred_is:
                # a list there needs the full variant, which walks it.
                if stringify:
                    folded[name], listed, value = _str_tree(value)
                    simple = simple and not listed
                    keyed = keyed and value is not None
                else:
                    keyed = False
                    if simple and not _tree(value, _plain_ascii, lists=False):
                        simple = False
            elif is_creds and kind is list:
                if len(value) == 1 and type(value[0]) is str:
                    value = folded[name] = value[0]
                    kind = str
                    if simple and not (stringify or _plain_ascii(value)):
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
            else:  # a subclass of str, int or bool
                simple = lowered = keyed = False
            if lowered and not (type(name) is str and name.isascii()):
                lowered = False
            part.append((name, kind, value))
        key.append(tuple(part))
    creds = doc['credentials']
    if folded:
        creds = {**creds, **folded}
    target = doc['target']
    if target_sent:
        target = {**target, **target_sent}
    if not stringify:
        # Older conversions compare by py_str, which lower-cases nothing,
        # but their variants were chosen on every string.
        lowered = all_ascii(creds) and all_ascii(target)
        simple = simple and lowered
    if roles_raise:
        variant = RAISING
    elif simple and lowered:
        variant = LOWER if lower else SIMPLE
    elif lowered:
        variant = ASCII
    else:
        variant = FULL
    walked = bool(paths) and all(_clean_walk(creds, p) for p in paths)
    # walked depends on the rule's paths as well as on the document: it
    # is part of what the key stands for (the engine reuses a converted
    # document for every rule sent an equal key).
    return Profile(
        variant, (*key, walked) if keyed else None, creds, walked, target
    )


def target_profile(
    target: Mapping[str, Any],
) -> tuple[Mapping[str, Any], bool] | None:
    """The target half of :func:`fast_profile`, for many targets of one
    caller (``engine_batch``): the target as sent (ints, booleans and None
    as their str()), and whether its strings and keys are ASCII; None
    when the fast path cannot take it (a list, a dict, a float, a value
    of a subclass).  For conversions that say ``fast_lists``."""
    sent = None
    ascii_only = True
    for name, value in target.items():
        kind = type(value)
        if kind is str:
            if ascii_only and not value.isascii():
                ascii_only = False
        elif kind in _STRINGIFIED:
            if sent is None:
                sent = dict(target)
            sent[name] = str(value)
        else:
            return None
        if ascii_only and not (type(name) is str and name.isascii()):
            ascii_only = False
    return (target if sent is None else sent), ascii_only


def _clean_walk(creds: Mapping[str, Any], path: tuple[str, ...]) -> bool:
    """Whether oslo.policy's walk of path through creds (``_find_in_dict``,
    which walks a list item by item) meets only dicts until a key is
    missing or it ends, on scalars: nothing raises, whatever the order
    of the items, and no str() of a container is compared."""
    nodes: list[Any] = [creds]
    for segment in path:
        found: list[Any] = []
        for node in nodes:
            if type(node) is not dict:
                return False
            if segment in node:
                value = node[segment]
                if type(value) is list:
                    found.extend(value)
                else:
                    found.append(value)
        nodes = found
    return all(type(v) not in (list, dict) for v in nodes)
