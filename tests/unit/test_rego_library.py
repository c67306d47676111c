"""The helper library's own Rego tests, run in regopy (no OPA needed).

tests/functional runs the same files under ``opa test``; here they run
through ``oslo_opa.regotest`` (what ``oslo-opa test`` runs), ``with``
tests included.
"""

from __future__ import annotations

from importlib import resources

import pytest

from oslo_opa import regotest

REGO = resources.files('oslo_opa') / 'rego' / 'oslo_opa'
TEST_FILES = sorted(
    f.name for f in REGO.iterdir() if f.name.endswith('_test.rego')
)


@pytest.fixture(scope='module')
def results():
    return regotest.run([str(REGO)])


def test_there_are_library_tests(results):
    assert 'lib_test.rego' in TEST_FILES
    assert len(results) >= 10
    files = {r.file.rsplit('/', 1)[-1] for r in results}
    assert files == set(TEST_FILES)


def test_every_library_test_passes(results):
    bad = [f'{r.full_name}: {r.outcome} {r.error or ""}' for r in results]
    bad = [b for b, r in zip(bad, results, strict=True) if not r.passed]
    assert not bad, '\n'.join(bad)
    assert not any(r.skipped for r in results)


def test_a_failing_rego_test_is_reported(tmp_path):
    (tmp_path / 't.rego').write_text(
        'package t\n\ntest_bad if {\n\t1 == 2\n}\n\ntest_good := true\n'
    )
    bad, good = regotest.run([str(tmp_path)])
    assert (bad.name, bad.failed, bad.passed) == ('test_bad', True, False)
    assert (good.name, good.passed) == ('test_good', True)
