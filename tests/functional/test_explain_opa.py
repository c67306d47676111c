"""Decider.explain over a real OPA (driver = http): the decision is
OPA's, the tree the embedded engine's on the same rego_path, and the two
agree on every explained request (issue 11, part 3)."""

from __future__ import annotations

import pytest

from oslo_opa import bundle, decider, explain
from oslo_opa.convert import convert, load_rule_table
from tests import corpus, explained
from tests.differential import enforcer_for, rule_inputs
from tests.functional.test_opa_sidecar import SMALL, Opa


@pytest.fixture(scope='module')
def served(opa_bin, tmp_path_factory):
    root = tmp_path_factory.mktemp('explain')
    directory = str(root / SMALL)
    convert(directory, policy_files=[corpus.policy_file(SMALL)], tests=False)
    path = str(root / 'bundle.tar.gz')
    bundle.build(directory, path)
    opa = Opa(opa_bin, root, bundles=[path])
    opa.start()
    yield directory, opa
    opa.stop()


def test_http_decisions_are_explained_by_the_embedded_engine(served):
    directory, opa = served
    d = decider.load(
        directory, driver='http', cache_size=0, **opa.client_options()
    )
    table = load_rule_table(policy_files=[corpus.policy_file(SMALL)])
    enforcer = enforcer_for(table)
    explained_count = 0
    try:
        for rule in sorted(table.rules)[::4]:
            for creds, target in rule_inputs(table, rule, 4):
                result = d.explain(rule, target, creds)
                assert result['decision'] == d.decide(rule, target, creds)
                assert (
                    "the tree is the embedded engine's" in (result['notes'][0])
                )
                assert len(result['notes']) == 1, result['notes']
                found = explained.problems(
                    result, enforcer, rule, creds, target
                )
                assert not found, (rule, creds, target, found)
                assert (explain.recompute(result['tree']) == 'pass') == (
                    result['decision']
                )
                explained_count += 1
    finally:
        d.close()
    assert explained_count >= 20
