"""Explanations on the real corpus are true (issue 11, part 3).

For every service of tests/fixtures/corpus, rules chosen from all over
the policy (every rule that reads another through ``rule:``, every one
with a ``not``, and a spread of the others; all of them with
``OSLO_OPA_EXPLAIN_ALL=1``) are explained on generated inputs, denials
above all: the leaves must recompute the decision with oslo.policy's
and/or/not/raise semantics, each check's outcome must be oslo.policy's
own on that input, and the decision oslo.policy's (see tests/explained).
"""

from __future__ import annotations

import os

import pytest

from oslo_opa import explain
from oslo_opa.convert import compile_table, emit, load_rule_table
from oslo_opa.engine import RegoPolicy
from tests import corpus, explained
from tests.differential import enforcer_for, rule_inputs

ALL = os.environ.get('OSLO_OPA_EXPLAIN_ALL') == '1'
RULES = 10
INPUTS = 12


def _chosen(table) -> list[str]:
    if ALL:
        return list(table.rules)
    names = sorted(table.rules)
    texts = {n: str(table.rules[n]) for n in names}
    reading = [n for n in names if 'rule:' in texts[n]]
    negated = [n for n in names if 'not ' in texts[n]]
    spread = names[:: max(1, len(names) // RULES)]
    picked = reading[:: max(1, len(reading) // RULES)] + negated[:4] + spread
    return sorted(set(picked))


@pytest.fixture(scope='module', params=corpus.SERVICES)
def service(request, tmp_path_factory):
    name = request.param
    table = load_rule_table(policy_files=[corpus.policy_file(name)])
    out = str(tmp_path_factory.mktemp(name) / 'out')
    emit.write(compile_table(table, name), out, table.scope_types)
    return name, table, RegoPolicy(out), enforcer_for(table)


def test_explanations_recompute_oslo_policys_decisions(service):
    name, table, policy, enforcer = service
    wrong = []
    denials = raised = 0
    for rule in _chosen(table):
        for creds, target in rule_inputs(table, rule, INPUTS):
            result = explain.explain(policy, rule, creds, target)
            found = explained.problems(result, enforcer, rule, creds, target)
            if found:
                wrong.append((rule, creds, target, found))
            denials += not result['decision']
            raised += any(
                n['outcome'] == 'raise'
                for n in explained.nodes(result['tree'])
            )
            if not result['decision']:
                assert explain.failing_leaves(result), (rule, creds)
    assert not wrong, wrong[:3]
    assert denials >= 20, f'{name}: only {denials} denials explained'
    assert raised, f'{name}: no explanation met a raising check'
