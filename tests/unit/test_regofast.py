"""regofast: the same inputs and results as regopy's own API, by a
shorter path."""

from __future__ import annotations

import pytest
import regopy

from oslo_opa import regofast

DOCS = [
    {
        'credentials': {
            'roles': ['Member', 'reader'],
            'project_id': 'p1',
            'domain_id': None,
            'is_admin': False,
            'n': -(2**63),
        },
        'target': {'target.project.id': 'p1', 'odd': 'é"\\\nx'},
        'rule': 'identity:get_project',
    },
    {'a': [1, [2, {'b': None}], True, 'x'], 'k': 2**63 - 1},
    # Left to regopy.Input: a float, an int beyond 64 bits, a tuple.
    {'f': 1.5, 'big': 2**70, 't': ('a', 'b')},
    {},
    [],
    'text',
    None,
]
QUERIES = [
    'x := input',
    'x := count(input)',
    'x := [k | some k, _ in input]',
    'x := input.credentials.roles[0]',
    'x := count(input.target.odd)',
    'x := input.a[1][1].b',
    'x := is_null(input.credentials.domain_id)',
    'x := input.k + 0',
    'x := input.f',
    'x := input.big',
    'x := input.t',
]


def _answers(make):
    out = []
    for doc in DOCS:
        it = regopy.Interpreter()
        it.set_input(make(doc))
        row = []
        for q in QUERIES:
            try:
                row.append(str(it.query(q)))
            except ValueError:  # regopy cannot parse its own output
                row.append('<unparsable>')
        out.append(row)
    return out


def test_make_input_is_regopy_input():
    assert _answers(regofast.make_input) == _answers(regopy.Input)


def test_the_comparison_can_fail():
    def wrong(doc):
        return regopy.Input(doc if doc != {} else {'extra': 1})

    assert _answers(wrong) != _answers(regopy.Input)


@pytest.fixture
def bundle():
    it = regopy.Interpreter()
    it.add_module(
        'p.rego',
        'package p\n\nyes := true\n\nno := false\n\nmaybe := "maybe"\n\n'
        'never if false\n\nboom := 1 / input.zero\n',
    )
    built = it.build(None, ['p/yes', 'p/no', 'p/maybe', 'p/never', 'p/boom'])
    assert built.ok()
    return built


@pytest.mark.parametrize(
    'entrypoint, ok, text',
    [
        ('p/yes', True, '{"expressions":[true]}'),
        ('p/no', True, '{"expressions":[false]}'),
        ('p/maybe', True, '{"expressions":["maybe"]}'),
        ('p/never', True, 'undefined'),
    ],
)
def test_query_gives_the_result_text(bundle, entrypoint, ok, text):
    it = regopy.Interpreter()
    it.set_input(regofast.make_input({'zero': 0}))
    assert regofast.query(it, bundle, entrypoint) == (ok, text)
    out = it.query_bundle_entrypoint(bundle, entrypoint)
    assert (out.ok(), str(out)) == (ok, text)


def test_query_reports_an_error_without_raising(bundle):
    it = regopy.Interpreter()
    it.strict_built_in_errors = True
    it.set_input(regofast.make_input({'zero': 0}))
    ok, text = regofast.query(it, bundle, 'p/boom')
    assert (ok, text) != (True, '{"expressions":[true]}')
    assert not ok or 'expressions' not in text


def test_without_the_c_entry_points_regopy_is_used(bundle, monkeypatch):
    monkeypatch.setattr(regofast, '_LIB', None)
    made = regofast.make_input({'zero': 0})
    assert isinstance(made, regopy.Input)
    it = regopy.Interpreter()
    it.set_input(made)
    assert regofast.query(it, bundle, 'p/yes') == (
        True,
        '{"expressions":[true]}',
    )
