"""How decide_many's items are packed into requests, and how OPA's
answers to the batch rules are read (the requests themselves run against
a real OPA in tests/functional/test_batch_opa.py)."""

from __future__ import annotations

import json

import pytest

from oslo_opa import batch
from oslo_opa.drivers import http_batch


def _item(i, rule, creds, n=0):
    return (i, rule, rule, {'credentials': creds, 'target': {'n': n}})


A = {'roles': ['reader']}
B = {'roles': ['admin']}


def _shape(requests):
    """Each request as ([group sizes], [single positions])."""
    return [
        ([len(g) for g in groups], [s[0] for s in singles])
        for groups, singles in requests
    ]


@pytest.mark.parametrize(
    'items,grouped,expected',
    [
        # Four targets of a rule with a batch form: a group.
        ([_item(i, 'r', A) for i in range(4)], {'r'}, [([4], [])]),
        # Three are too few: single items.
        ([_item(i, 'r', A) for i in range(3)], {'r'}, [([], [0, 1, 2])]),
        # No batch form in OPA for the rule: single items.
        ([_item(i, 'r', A) for i in range(5)], set(), [([], [0, 1, 2, 3, 4])]),
        # Another caller's items are not in the first's group.
        (
            [_item(i, 'r', A) for i in range(4)] + [_item(4, 'r', B)],
            {'r'},
            [([4], [4])],
        ),
        # Two rules, each a group, and a rule of one item: one request.
        (
            [_item(i, 'r', A) for i in range(4)]
            + [_item(4 + i, 's', A) for i in range(5)]
            + [_item(9, 't', A)],
            {'r', 's', 't'},
            [([4, 5], [9])],
        ),
    ],
)
def test_items_are_packed_as_groups_and_single_items(items, grouped, expected):
    got = http_batch._requests(items, frozenset(grouped))
    assert _shape(got) == expected


def test_requests_hold_at_most_the_limit(monkeypatch):
    monkeypatch.setattr(http_batch, 'BATCH_LIMIT', 10)
    items = [_item(i, 'r', A, i) for i in range(23)]
    items += [_item(23 + i, 's', B) for i in range(3)]
    got = http_batch._requests(items, frozenset({'r'}))
    assert _shape(got) == [([10], []), ([10], []), ([3], [23, 24, 25])]
    sizes = [sum(map(len, g)) + len(s) for g, s in got]
    assert all(size <= 10 for size in sizes)
    # Every item once, in a group of its rule.
    seen = sorted(m[0] for g, s in got for m in [*sum(g, []), *s])
    assert seen == list(range(26))


@pytest.mark.parametrize(
    'reply,count,expected',
    [
        ({'result': [True, False]}, 2, [True, False]),
        ({'result': [True]}, 2, None),  # too few
        ({'result': [True, 1]}, 2, None),  # not a boolean
        ({'result': {'a': True}}, 1, None),
        ({}, 1, None),  # undefined: no batch form of the rule
    ],
)
def test_group_answers(reply, count, expected):
    assert batch.group_answers(json.dumps(reply).encode(), count) == expected


def test_group_answers_of_garbage():
    assert batch.group_answers(b'<html>', 1) is None


@pytest.mark.parametrize(
    'result,sizes,count,expected',
    [
        (
            {
                'groups': [[0, [True, False]], [1, [False]]],
                'items': [[0, True]],
            },
            [2, 1],
            1,
            ([[True, False], [False]], [True]),
        ),
        # A group OPA gave no list of as many booleans for: None, decided
        # otherwise; an item left out: None.
        (
            {'groups': [[0, [True]], [5, [True]]], 'items': []},
            [2],
            1,
            ([None], [None]),
        ),
        ({'groups': 'x', 'items': [[0, False]]}, [1], 1, ([None], [False])),
    ],
)
def test_decisions_answers(result, sizes, count, expected):
    data = json.dumps({'result': result}).encode()
    assert batch.decisions_answers(data, sizes, count) == expected


def test_decisions_answers_without_the_rule():
    assert batch.decisions_answers(b'{}', [1], 0) is None
    assert batch.decisions_answers(b'not json', [1], 0) is None


def test_bodies_carry_what_the_rules_read():
    body = json.loads(batch.group_body(A, 'r', [{'n': 1}, {'n': 2}]))
    assert body == {
        'input': {
            'credentials': A,
            'rule': 'r',
            'targets': [{'n': 1}, {'n': 2}],
        }
    }
    body = json.loads(
        batch.decisions_body([('r', A, 'r', [{'n': 1}])], [('s', {'x': 1})])
    )
    assert body['input']['groups'] == [
        {
            'slug': 'r',
            'input': {'credentials': A, 'rule': 'r', 'targets': [{'n': 1}]},
        }
    ]
    assert body['input']['items'] == [{'slug': 's', 'input': {'x': 1}}]
