"""What the explanation tests share: is an explanation true?

An explanation is checked three ways against oslo.policy itself:

* its leaves recompute the decision with oslo.policy's and/or/not and
  raise semantics (``explain.recompute``), and every inner node's
  outcome is what its children make of it;
* every check leaf's outcome is oslo.policy's own evaluation of that
  check on the same input (``_checks._check``: pass, fail or raise);
* its decision is oslo.policy's (a raise is a deny).
"""

from __future__ import annotations

import copy
from typing import Any

from oslo_policy import _checks, _parser

from oslo_opa import explain, inputs
from tests.differential import oslo_decision

KINDS = {'and', 'or', 'not', 'rule', 'check', 'overlay'}
OUTCOMES = {'pass', 'fail', 'raise'}


def oslo_leaf(text: str, creds: dict, target: dict, enforcer: Any) -> str:
    """oslo.policy's outcome of one check, written as text."""
    check = _parser.parse_rule(text)
    creds = inputs.credentials_dict(copy.deepcopy(creds))
    target = copy.deepcopy(target)
    try:
        ok = _checks._check(check, target, creds, enforcer, None)
    except Exception:  # noqa: BLE001 - oslo.policy raising
        return 'raise'
    return 'pass' if ok else 'fail'


def nodes(node: dict):
    yield node
    for child in node['children']:
        yield from nodes(child)


def shape_problems(result: dict) -> list[str]:
    """What is wrong with the JSON shape the issue fixes."""
    problems = []
    if not {'rule', 'decision', 'tree'} <= set(result):
        problems.append(f'top-level keys {sorted(result)}')
    if not isinstance(result.get('decision'), bool):
        problems.append('decision is not a boolean')
    for n in nodes(result['tree']):
        if n['kind'] not in KINDS or n['outcome'] not in OUTCOMES:
            problems.append(f'node {n["kind"]} {n["outcome"]}')
        if not isinstance(n['text'], str):
            problems.append(f'text {n["text"]!r}')
        if n['kind'] == 'check' and 'credentials' not in n:
            problems.append(f'check {n["text"]} without its values')
    return problems


def problems(
    result: dict,
    enforcer: Any,
    rule: str,
    creds: dict,
    target: dict,
    leaves: bool = True,
) -> list[str]:
    """Everything untrue in result (empty: it explains the decision)."""
    found = shape_problems(result)
    tree = result['tree']
    if (explain.recompute(tree) == 'pass') != result['decision']:
        found.append('the leaves do not recompute the decision')
    for n in nodes(tree):
        if n['children'] and explain.recompute(n) != n['outcome']:
            found.append(f'{n["kind"]} {n["text"]}: inconsistent outcome')
        if leaves and n['kind'] == 'check':
            want = oslo_leaf(n['text'], creds, target, enforcer)
            if want != n['outcome']:
                found.append(f'{n["text"]}: {n["outcome"]}, oslo {want}')
    if oslo_decision(enforcer, rule, creds, target) != result['decision']:
        found.append('oslo.policy decides otherwise')
    return found
