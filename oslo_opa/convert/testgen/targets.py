"""The cases a rule's structure asks for: which nodes must hold or fail
(see the package doc), and how a case is described in its test."""

from __future__ import annotations

import dataclasses
from typing import Any

from oslo_policy import _checks

from oslo_opa.convert.syntax import comment
from oslo_opa.convert.testgen.leaves import AND, NOT, OR


@dataclasses.dataclass
class Target:
    """One case to build: the truth value each listed node must have."""

    label: tuple[str, ...]
    constraints: list[tuple[_checks.BaseCheck, bool]]
    focus: _checks.BaseCheck
    what: str  # 'alone', 'none', 'all', 'false', 'true'
    total: int = 0
    # Checks that fail by a near miss rather than by a missing value.
    near: list[_checks.BaseCheck] = dataclasses.field(default_factory=list)
    # Only the rule's decision matters (a raise is a deny).
    decision_only: bool = False


def _flatten(check: Any, kind: type) -> list[Any]:
    # (a or b) or c is a or b or c, in the same order of evaluation.
    out: list[Any] = []
    for sub in check.rules:
        out.extend(_flatten(sub, kind) if type(sub) is kind else [sub])
    return out


def targets_of(root: _checks.BaseCheck) -> list[Target]:
    """Every case root's structure asks for, each once."""
    out: list[Target] = []

    def walk(node: Any, ctx: list, label: tuple[str, ...]) -> None:
        kind = type(node)
        if kind is NOT:
            walk(node.rule, ctx, label)
        elif kind is OR:
            kids = _flatten(node, OR)
            for i, kid in enumerate(kids):
                others = [(k, False) for j, k in enumerate(kids) if j != i]
                sub = label + (f'branch_{i + 1}',)
                out.append(
                    Target(
                        sub,
                        ctx + others + [(kid, True)],
                        kid,
                        'alone',
                        total=len(kids),
                    )
                )
                walk(kid, ctx + others, sub)
            # The leaf alternatives fail by near misses.
            out.append(
                Target(
                    label,
                    ctx + [(k, False) for k in kids],
                    node,
                    'none',
                    total=len(kids),
                    near=kids,
                )
            )
        elif kind is AND:
            legs = _flatten(node, AND)
            out.append(
                Target(label, ctx + [(g, True) for g in legs], node, 'all')
            )
            for j, leg in enumerate(legs):
                others = [(g, True) for i, g in enumerate(legs) if i != j]
                sub = label + (f'leg_{j + 1}',)
                out.append(
                    Target(
                        sub,
                        ctx + others + [(leg, False)],
                        leg,
                        'false',
                        total=len(legs),
                        near=[leg],
                    )
                )
                walk(leg, ctx + others, sub)
        elif not ctx:
            out.append(Target(label, [(node, True)], node, 'true'))
            out.append(
                Target(label, [(node, False)], node, 'false', near=[node])
            )

    walk(root, [], ())
    # A node alone in its parent is the parent's own case: keep one.
    unique: list[Target] = []
    seen: set = set()
    for t in out:
        if signature(t) not in seen:
            seen.add(signature(t))
            unique.append(t)
    return unique


def signature(t: Target) -> frozenset:
    """Two targets with one signature ask for the same case."""
    return frozenset((id(c), w) for c, w in t.constraints)


def describe(t: Target) -> str:
    """What t exercises, for the comment above its test."""
    where = ', '.join(p.replace('_', ' ') for p in t.label)
    frag = comment(str(t.focus))
    if t.what == 'alone':
        return f'{where} of {t.total} alone holds: {frag}'
    if t.what == 'none':
        head = f'{where}: ' if where else ''
        return f'{head}none of the {t.total} branches holds: {frag}'
    if t.what == 'all':
        head = f'{where}: ' if where else ''
        return f'{head}every leg holds: {frag}'
    if t.what == 'false' and t.total:
        return f'{where} of {t.total} fails, the others hold: {frag}'
    return f'the check {"holds" if t.what == "true" else "fails"}: {frag}'


def why_not(t: Target) -> str:
    """Why t has no test, for the file's 'Not built' comment."""
    if t.what in ('true', 'false') and not t.label:
        verb = 'pass' if t.what == 'true' else 'fail'
        return (
            f'a test where the check string should {verb}: no input '
            f'makes {comment(str(t.focus))} {verb}'
        )
    what = describe(t)
    if t.what == 'alone':
        return (
            f'{what}: no input makes it hold while the other branches '
            f'fail (it never holds, or another branch holds whenever it '
            f'does)'
        )
    return f'{what}: no input gives this combination'
