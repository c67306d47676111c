"""oslo.policy against the converted Rego in regopy, on the real corpus.

For every rule of every service in tests/fixtures/corpus, at least 100
generated inputs per rule: the Enforcer's decision (a raise counts as a
deny) must equal the converted rule's ``allow``.  The inputs must also
drive every non-constant check of the rule (and of the rules it
references) both ways, or the test is not testing much.
"""

from __future__ import annotations

import os

import pytest
from oslo_policy import _checks

from oslo_opa import inputs, probe
from oslo_opa.convert import compile_table, emit, load_rule_table
from oslo_opa.engine import RegoPolicy
from tests.differential import INPUTS_PER_RULE, enforcer_for, oslo_decision

CORPUS = os.path.join(os.path.dirname(__file__), '..', 'fixtures', 'corpus')
SERVICES = sorted(
    name.split('.')[0]
    for name in os.listdir(CORPUS)
    if name.endswith('.policy.yaml')
)


def leaf_outcome(check, target, creds, enforcer):
    try:
        return bool(_checks._check(check, target, creds, enforcer, None))
    except Exception:  # noqa: BLE001
        return 'raise'


def _constant(check) -> bool:
    return type(check) is _checks.GenericCheck and (
        '%(' not in check.match and _is_literal(check.kind)
    )


def _is_literal(kind: str) -> bool:
    import ast

    try:
        ast.literal_eval(kind)
    except ValueError:
        return False
    except Exception:  # noqa: BLE001 - raises at enforce: constant
        return True
    return True


@pytest.fixture(scope='module', params=SERVICES)
def service(request, tmp_path_factory):
    name = request.param
    table = load_rule_table(
        policy_files=[os.path.join(CORPUS, f'{name}.policy.yaml')]
    )
    out = str(tmp_path_factory.mktemp(name) / 'out')
    emit.write(compile_table(table, name), out, table.scope_types)
    return name, table, RegoPolicy(out), enforcer_for(table)


def test_corpus_agrees_with_oslo_policy(service):
    name, table, policy, enforcer = service
    mismatches = []
    uncovered = []
    decisions = 0
    for rule in table.rules:
        leaves = probe.collect(table.rules, rule, table.default_rule)
        gen = probe.InputGenerator(leaves, seed=f'{name}:{rule}')
        outcomes = {id(c): set() for c in leaves.checks}
        for creds, target in gen.inputs(INPUTS_PER_RULE):
            expected = oslo_decision(enforcer, rule, creds, target)
            got = policy.evaluate(
                rule, inputs.build_input(creds, target, rule)
            )
            decisions += 1
            if got != expected:
                mismatches.append((rule, creds, target, expected, got))
            for check in leaves.checks:
                outcomes[id(check)].add(
                    leaf_outcome(check, target, creds, enforcer) is True
                )
        for check in leaves.checks:
            if not _constant(check) and len(outcomes[id(check)]) < 2:
                uncovered.append((rule, str(check)))
    assert decisions >= INPUTS_PER_RULE * len(table.rules)
    assert not mismatches, '\n'.join(
        f'{name} {rule!r}: creds={c!r} target={t!r} oslo.policy={e} rego={g}'
        for rule, c, t, e, g in mismatches[:20]
    )
    assert not uncovered, f'checks never driven both ways: {uncovered[:20]}'


def test_harness_detects_a_difference(tmp_path):
    """The comparison above can fail: a wrong module is caught."""
    table = load_rule_table(
        policy_files=[os.path.join(CORPUS, 'glance.policy.yaml')]
    )
    out = str(tmp_path / 'out')
    conv = compile_table(table, 'glance')
    emit.write(conv, out, table.scope_types)
    # Edited after conversion (so the engine knows it is hand-edited).
    module = os.path.join(out, conv.rules['default'].package.replace('.', '/'))
    with open(module + '.rego') as f:
        text = f.read()
    with open(module + '.rego', 'w') as f:
        f.write(
            text.replace(
                '\tnot maybe_error\n\t_fast\n',
                '\tnot maybe_error\n\tnot _fast\n',
            ).replace('\tstate == "t"', '\tstate != "t"')
        )
    policy = RegoPolicy(out)
    enforcer = enforcer_for(table)
    leaves = probe.collect(table.rules, 'default', table.default_rule)
    gen = probe.InputGenerator(leaves, seed=1)
    differences = sum(
        policy.evaluate('default', inputs.build_input(c, t, 'default'))
        != oslo_decision(enforcer, 'default', c, t)
        for c, t in gen.inputs(50)
    )
    assert differences == 50
