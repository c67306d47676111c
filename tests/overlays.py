"""What the overlay tests share: one customization written twice.

Once as an overlay (Rego, package ``oslo_opa.overlay``)::

    deny["*"]  for callers holding the role "suspended"
    deny[R]    for callers holding "barred", for the rules R in denies
    grant[R]   for callers holding "auditor", for the rules R in grants

and once in oslo.policy syntax, by rewriting every rule of the effective
table as the issue's contract says an overlay behaves:
``((auditor) or (R)) and not (suspended or barred)``, where a rule read
through ``rule:`` is the rewritten one.  The oslo.policy side must then
decide exactly what the converted Rego with the overlay decides.

The role test is a check class of its own (``overlay_role``), not
``role:``: an overlay's condition is boolean and never raises, while
oslo.policy's RoleCheck raises on roles that are not a list of strings.
It is the same test as the Rego's: roles is a list holding a string
whose lower case is the name (the names have no character whose Python
and Rego lower cases differ).
"""

from __future__ import annotations

import dataclasses
import os
import random
from typing import Any

from oslo_policy import _checks

from oslo_opa import inputs
from oslo_opa.convert.rules import RuleTable
from tests import differential

SUSPENDED = 'suspended'
BARRED = 'barred'
AUDITOR = 'auditor'
KIND = 'overlay_role'


@_checks.register(KIND)
class OverlayRoleCheck(_checks.Check):
    """True when the caller's roles (as sent to Rego) hold the match."""

    def __call__(self, target, creds, enforcer, current_rule=None):
        if 'roles' not in creds:
            return False
        roles = inputs.credentials_json({'roles': creds['roles']})['roles']
        return isinstance(roles, list) and any(
            isinstance(r, str) and r.lower() == self.match for r in roles
        )


EXACT = 'exact_role'


@_checks.register(EXACT)
class ExactRoleCheck(_checks.Check):
    """Rego's ``"<match>" in input.credentials.roles``: an item (of a
    list) or a value (of an object) equal to the match, case and all."""

    def __call__(self, target, creds, enforcer, current_rule=None):
        if 'roles' not in creds:
            return False
        roles = inputs.credentials_json({'roles': creds['roles']})['roles']
        if isinstance(roles, dict):
            roles = list(roles.values())
        return isinstance(roles, list) and any(
            isinstance(r, str) and r == self.match for r in roles
        )


def _role(name: str) -> OverlayRoleCheck:
    return OverlayRoleCheck(KIND, name)


def chosen(table: RuleTable) -> tuple[list[str], list[str]]:
    """(grants, denies): rules other rules read, half each, and a sample
    of the others; deterministic."""
    read = sorted(
        {
            ref
            for check in table.rules.values()
            for ref in _references(check)
            if ref in table.rules
        }
    )
    names = sorted(table.rules)
    grants = sorted(set(read[0::2]) | set(names[0::25]))
    denies = sorted(set(read[1::2]) | set(names[12::25]) | set(names[0::50]))
    return grants, denies


def _references(check: _checks.BaseCheck):
    if isinstance(check, _checks.RuleCheck):
        yield check.match
    for sub in getattr(check, 'rules', ()):
        yield from _references(sub)
    if isinstance(check, _checks.NotCheck):
        yield from _references(check.rule)


def customized(
    table: RuleTable, grants: list[str], denies: list[str]
) -> RuleTable:
    """table with every rule rewritten as the overlay makes it decide."""
    rules = {}
    for name, check in table.rules.items():
        if name in grants:
            check = _checks.OrCheck([_role(AUDITOR), check])
        deny: _checks.BaseCheck = _role(SUSPENDED)
        if name in denies:
            deny = _checks.OrCheck([deny, _role(BARRED)])
        rules[name] = _checks.AndCheck([check, _checks.NotCheck(deny)])
    return dataclasses.replace(table, rules=rules)


def _condition(role: str) -> str:
    return (
        '{\n'
        '\tis_array(input.credentials.roles)\n'
        '\tsome r in input.credentials.roles\n'
        '\tis_string(r)\n'
        f'\tlower(r) == "{role}"\n'
        '}'
    )


def overlay_rego(grants: list[str], denies: list[str]) -> str:
    """The overlay module."""
    out = ['package oslo_opa.overlay', '']
    out += [
        f'deny["*"] contains "suspended users can do nothing" if '
        f'{_condition(SUSPENDED)}',
        '',
    ]
    for name in denies:
        assert all(' ' <= c <= '~' and c not in '"\\' for c in name), name
        out += [
            f'deny["{name}"] contains "barred" if {_condition(BARRED)}',
            '',
        ]
    for name in grants:
        assert all(' ' <= c <= '~' and c not in '"\\' for c in name), name
        out += [
            f'grant["{name}"] contains "auditors" if {_condition(AUDITOR)}',
            '',
        ]
    return '\n'.join(out)


# Roles added to an input, so that each overlay fires, alone and together.
_EXTRA_ROLES: list[list[str]] = [
    [],
    ['Auditor'],
    ['SUSPENDED'],
    ['barred'],
    ['auditor', 'barred'],
    ['auditor', 'suspended'],
]
# Credentials that take the three-valued path (not lib.tidy).
_UNTIDY: list[dict[str, Any]] = [
    {'project_id': ['p1', 'p2']},
    {'domain_id': {'id': 'd1'}},
    {'user_id': None, 'service_roles': ['service', 'admin']},
]


def inputs_for(
    table: RuleTable, rule: str, count: int
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """count generated inputs for rule, each in every role variant, some
    with credentials that leave the fast path."""
    rng = random.Random(f'overlay:{rule}')  # noqa: S311 - test data
    out = []
    for creds, target in differential.rule_inputs(table, rule, count):
        for extra in _EXTRA_ROLES:
            c = dict(creds)
            if extra and isinstance(c.get('roles'), list):
                c['roles'] = [*c['roles'], *extra]
            elif extra and 'roles' not in c:
                c['roles'] = list(extra)
            if rng.random() < 0.3:
                c.update(rng.choice(_UNTIDY))
            out.append((c, target))
    return out


# --- a hand edit and its oslo.policy twin ---------------------------------


def edit_admin_required(directory: str) -> None:
    """The issue's edit of a converted keystone: a suspended admin is no
    admin, in both allow bodies of admin_required."""
    module = os.path.join(directory, 'keystone', 'admin_required.rego')
    with open(module) as f:
        text = f.read()
    edited = text.replace(
        '\tnot maybe_error\n\t_fast\n',
        '\tnot maybe_error\n\t_fast\n\tnot "suspended" in '
        'input.credentials.roles\n',
    ).replace(
        '\tstate == "t"\n',
        '\tstate == "t"\n\tnot "suspended" in input.credentials.roles\n',
    )
    assert edited.count('"suspended"') == 2
    with open(module, 'w') as f:
        f.write(edited)


def edited_table(table: RuleTable) -> RuleTable:
    """The same edit in oslo.policy syntax ("suspended" exactly, as the
    Rego's ``in`` compares)."""
    rules = dict(table.rules)
    exact = ExactRoleCheck(EXACT, 'suspended')
    rules['admin_required'] = _checks.AndCheck(
        [rules['admin_required'], _checks.NotCheck(exact)]
    )
    return dataclasses.replace(table, rules=rules)
