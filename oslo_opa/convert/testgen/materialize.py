"""The smallest credentials and target that give leaf checks the truth
values the solver chose."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from oslo_opa.convert.syntax import Format
from oslo_opa.convert.testgen.leaves import Leaf


class _Terms:
    """Union-find over credential paths, target keys and constants."""

    def __init__(self) -> None:
        self.parent: dict[Any, Any] = {}

    def find(self, t: Any) -> Any:
        self.parent.setdefault(t, t)
        while self.parent[t] != t:
            self.parent[t] = self.parent[self.parent[t]]
            t = self.parent[t]
        return t

    def union(self, a: Any, b: Any) -> None:
        self.parent[self.find(a)] = self.find(b)


def _typed(text: str) -> Any:
    # What a service would send: booleans and None, not their str().
    return {'True': True, 'False': False, 'None': None}.get(text, text)


def _fmt_term(fmt: Format) -> Any:
    """A constant or a target key when fmt is that simple, else None."""
    if fmt.static is not None:
        return ('const', fmt.static)
    if len(fmt.parts) == 1:
        return ('key', fmt.keys[0])
    return None


def materialize(
    assign: dict, near: set, has_roles: bool, avoid: set[str]
) -> tuple[dict, dict] | None:
    """The smallest (creds, target) giving every leaf its truth value,
    or None when the values clash (the caller tries another solution).

    A failing comparison is a missing key or credential, except for the
    leaves in near: those fail by a near miss (both sides present,
    unequal), which is what shows the comparison itself is needed.
    """
    terms = _Terms()
    unequal: list[tuple[Any, Any, bool]] = []
    roles_in: list[Any] = []
    roles_out: list[tuple[Any, bool]] = []
    later: list[tuple[Leaf, bool]] = []
    for ident, (leaf, want) in assign.items():
        side = _fmt_term(leaf.fmt)
        if side is None:
            later.append((leaf, want))
            continue
        terms.find(side)
        if leaf.kind == 'role':
            if want:
                roles_in.append(side)
            else:
                roles_out.append((side, ident in near))
            continue
        if leaf.kind == 'path':
            if leaf.path[0] == 'roles':
                return None  # a generic check walking the roles list
            lhs = ('cred', leaf.path)
        else:
            lhs = ('const', leaf.value)
        if want:
            terms.union(lhs, side)
        else:
            terms.find(lhs)
            unequal.append((lhs, side, ident in near))

    needed = {terms.find(s) for s in roles_in}
    needed.update(terms.find(s) for s, is_near in roles_out if is_near)
    for a, b, is_near in unequal:
        if terms.find(a) == terms.find(b):
            return None
        if is_near:
            needed.update((terms.find(a), terms.find(b)))
    classes: dict[Any, list[Any]] = {}
    for t in list(terms.parent):
        classes.setdefault(terms.find(t), []).append(t)
    values: dict[Any, Any] = {}
    fresh = _fresh(avoid)
    for root, members in classes.items():
        consts = {t[1] for t in members if t[0] == 'const'}
        if len(consts) > 1:
            return None
        if consts:
            values[root] = _typed(consts.pop())
        elif root in needed or len(members) > 1:
            values[root] = next(fresh)

    creds: dict[str, Any] = {}
    target: dict[str, Any] = {}
    cred_values: dict[tuple[str, ...], Any] = {}
    for t in terms.parent:
        root = terms.find(t)
        if root not in values:
            continue
        if t[0] == 'key':
            target[t[1]] = values[root]
        elif t[0] == 'cred':
            cred_values[t[1]] = values[root]

    def text_of(side: Any) -> str | None:
        if side[0] == 'const':
            return side[1]
        return str(target[side[1]]) if side[1] in target else None

    roles = [text_of(s) for s in roles_in]
    banned = {text_of(s) for s, _ in roles_out} - {None}
    banned = {b.lower() for b in banned}
    for leaf, want in later:
        # Several parts: substitute once every key has a value.
        for key in leaf.fmt.keys:
            if key not in target:
                target[key] = next(fresh)
        text = ''.join(
            str(target[p[1]]) if isinstance(p, tuple) else p
            for p in leaf.fmt.parts
        )
        if leaf.kind == 'role':
            if want:
                roles.append(text)
            else:
                banned.add(text.lower())
        elif leaf.kind == 'path':
            if leaf.path[0] == 'roles':
                return None
            present = leaf.path in cred_values
            have = cred_values.get(leaf.path)
            if want and not present:
                cred_values[leaf.path] = text
            elif present and (str(have) == text) != want:
                return None
        elif (text == leaf.value) != want:
            return None
    if any(r is None or r.lower() in banned for r in roles):
        return None
    for path in sorted(cred_values, key=len):
        if not _put(creds, path, cred_values[path]):
            return None
    if has_roles:
        unique: list[str] = []
        for r in roles:
            if r.lower() not in {u.lower() for u in unique}:
                unique.append(r)
        creds['roles'] = unique
    return creds, target


def _fresh(avoid: set[str]) -> Iterator[str]:
    n = 0
    while True:
        n += 1
        if f'v{n}' not in avoid:
            yield f'v{n}'


def _put(creds: dict, path: tuple[str, ...], value: Any) -> bool:
    """creds[path...] = value; False where another value is in the way."""
    node = creds
    for seg in path[:-1]:
        nxt = node.setdefault(seg, {})
        if not isinstance(nxt, dict):
            return False
        node = nxt
    if path[-1] in node:
        return False
    node[path[-1]] = value
    return True
