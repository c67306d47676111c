"""The helper library's own Rego tests, run in regopy (no OPA needed).

tests/functional runs the same files under ``opa test``.  regopy 1.5.2
crashes the process (SIGSEGV) compiling a ``with input as`` over a
function whose comprehension has a condition, which the library's
functions all have; so tests using ``with`` run under OPA only, and are
left out of the module handed to regopy (compiling it would crash).
The same functions run in regopy in every differential test.
"""

from __future__ import annotations

import re
from importlib import resources

import pytest
import regopy

REGO = resources.files('oslo_opa') / 'rego' / 'oslo_opa'
TEST_FILES = sorted(
    f.name for f in REGO.iterdir() if f.name.endswith('_test.rego')
)
LIBRARY = sorted(
    f.name
    for f in REGO.iterdir()
    if f.name.endswith('.rego') and not f.name.endswith('_test.rego')
)


def _split(text):
    """(head, {test name: its text}) of a test module."""
    blocks = re.split(r'\n(?=test_\w+ if)', text)
    return blocks[0], {
        re.match(r'test_\w+', b).group(0): b for b in blocks[1:]
    }


def _tests(name):
    text = (REGO / name).read_text('utf-8')
    package = re.search(r'^package (\S+)', text, re.M).group(1)
    return package, _split(text)[1]


def _regopy_text(name):
    head, tests = _split((REGO / name).read_text('utf-8'))
    kept = [t for t in tests.values() if ' with ' not in t]
    return '\n'.join([head, *kept])


CASES = [(f, t) for f in TEST_FILES for t in _tests(f)[1]]


@pytest.fixture(scope='module')
def interpreter():
    it = regopy.Interpreter()
    for name in LIBRARY:
        it.add_module(name, (REGO / name).read_text('utf-8'))
    for name in TEST_FILES:
        it.add_module(name, _regopy_text(name))
    return it


def test_there_are_library_tests():
    assert 'lib_test.rego' in TEST_FILES
    assert len(CASES) >= 10


@pytest.mark.parametrize('name, test', CASES)
def test_rego(interpreter, name, test):
    package, tests = _tests(name)
    if ' with ' in tests[test]:
        pytest.skip('uses `with`: regopy 1.5.2 crashes on it (OPA runs it)')
    out = interpreter.query(f'x := data.{package}.{test}')
    assert out.ok(), str(out)
    assert str(out) == '{"expressions":[true], "bindings":{"x":true}}', (
        f'{name}: {test} failed in regopy: {out}'
    )


def test_a_failing_rego_test_is_reported():
    it = regopy.Interpreter()
    it.add_module('t', 'package t\n\ntest_bad if {\n\t1 == 2\n}\n')
    assert str(it.query('x := data.t.test_bad')) == 'undefined'
