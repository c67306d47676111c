"""tools/service_policy_tests.py's verdict, without installing a service
(the real run is tests/functional/test_service_policy.py)."""

from __future__ import annotations

import importlib.util
import json
import pathlib

TOOL = pathlib.Path(__file__).resolve().parents[2] / 'tools'
spec = importlib.util.spec_from_file_location(
    'service_policy_tests', TOOL / 'service_policy_tests.py'
)
tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tool)


def test_identical_outcomes_are_no_problem():
    outcomes = {'a': 'success', 'b': 'fail', 'c': 'skip'}
    assert tool.compare(outcomes, dict(outcomes)) == []


def test_any_difference_is_named():
    native = {'a': 'success', 'b': 'success', 'c': 'success'}
    rego = {'a': 'success', 'b': 'fail', 'd': 'success'}
    assert tool.compare(native, rego) == [
        'b: native success, Rego fail',
        'c: native success, Rego None',
        'd: native None, Rego success',
    ]
    assert tool.compare({}, {}) == ['no test ran']


def test_totals_sum_the_workers(tmp_path):
    for pid, n in ((1, 2), (2, 3)):
        (tmp_path / f'rego-{pid}.json').write_text(
            json.dumps({
                'tests': n, 'tests_deciding': n, 'decisions': 10 * n,
                'differences': [['r', True, False]] * (pid - 1),
                'conversions': 1, 'convert_seconds': 0.5,
            })
        )  # fmt: skip
    found = tool.totals(tmp_path)
    assert found['tests'] == 5
    assert found['decisions'] == 50
    assert found['conversions'] == 2
    assert found['convert_seconds'] == 1.0
    assert found['differences'] == [['r', True, False]]
