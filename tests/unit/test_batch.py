"""decide_many: the same input decided once; OPA's batch answers read
strictly.  (Against the real OPA: tests/functional/test_batch_opa.)"""

from __future__ import annotations

import json

import pytest

from oslo_opa import batch, decider
from tests import policies

POLICY = """
owner: project_id:%(project_id)s
admin: role:admin
"""


@pytest.fixture
def converted(tmp_path):
    return policies.converted(str(tmp_path), POLICY)


@pytest.mark.parametrize('cache_size', [0, 64])
def test_the_same_input_is_decided_once(converted, cache_size):
    d = decider.load(converted, cache_size=cache_size)
    asked = []
    real = d.driver.decide_many

    def spy(items):
        asked.append(list(items))
        return real(items)

    d.driver.decide_many = spy
    creds = {'project_id': 'p1', 'roles': []}
    targets = [{'project_id': f'p{i % 3}', 'name': f'n{i}'} for i in range(30)]
    many = d.decide_many([('owner', t) for t in targets], creds)
    # owner reads project_id only: three inputs among thirty targets.
    assert len(asked) == 1 and len(asked[0]) == 3
    assert many == [d.decide('owner', t, creds) for t in targets]
    assert many.count(True) == 10
    d.close()


def test_answers_are_read_strictly():
    def reply(result):
        return json.dumps({'result': result}).encode()

    assert batch.answers(reply([[0, True], [2, False]]), 3) == [
        True,
        None,
        False,
    ]
    # Out of range, not a pair, not a boolean: no answer for that item.
    assert batch.answers(
        reply([[5, True], [0], [1, 'yes'], [True, True], [-1, False]]), 2
    ) == [None, None]
    # Not a batch's reply at all (no batch rule: one by one).
    assert batch.answers(reply(True), 2) is None
    assert batch.answers(b'{}', 2) is None
    assert batch.answers(b'not json', 2) is None


def test_the_rule_is_written_for_the_prefix():
    text = batch.module('a.b')
    assert 'package oslo_opa.batch.a.b\n' in text
    assert 'data.a.b[item.slug].allow with input as item.input' in text
    assert batch.path('a.b') == 'oslo_opa/batch/a/b/results'
