"""Run a service's unchanged unit tests with every decision made by Rego.

stestr starts its workers as ``$PYTHON -m stestr.subunit_runner.run ...``,
so a service's suite runs through
:class:`oslo_opa.fixture.RegoEnforcement` with no change to its code::

    PYTHON="python -m oslo_opa.testing.rego_run" stestr run <tests>

``python -m oslo_opa.testing.rego_run -m MODULE ARGS...`` runs MODULE as
``__main__`` after wrapping the ``setUp`` of every ``unittest.TestCase``:
``RegoEnforcement(shadow=True)`` is active from before the test's own
``setUp`` until after its last cleanup, and a shadow difference fails
the test (an error at cleanup, as with the fixture added by hand).

With ``OSLO_OPA_REGO_TOTALS=DIR`` each process that ran a test writes
``DIR/rego-<pid>.json`` at exit: ``tests``, ``tests_deciding`` (tests
that asked Rego at least once), ``decisions`` and ``differences``
(rule, Rego's decision, oslo.policy's), ``conversions`` (distinct rule
tables converted) and ``convert_seconds`` (the time looking them up and
converting them).
"""

from __future__ import annotations

import atexit
import json
import os
import runpy
import sys
import time
import unittest
from typing import Any

from oslo_opa import rego_enforcement
from oslo_opa.rego_enforcement import RegoEnforcement

TOTALS_ENV = 'OSLO_OPA_REGO_TOTALS'

totals: dict[str, Any] = {
    'tests': 0,
    'tests_deciding': 0,
    'decisions': 0,
    'differences': [],
    'conversions': 0,
    'convert_seconds': 0.0,
}


def _finish(rego: RegoEnforcement) -> None:
    totals['tests'] += 1
    totals['tests_deciding'] += rego.decisions > 0
    totals['decisions'] += rego.decisions
    totals['differences'].extend(rego.differences)
    rego.cleanUp()  # raises on a shadow difference: the test fails


def _wrap_setup(test: unittest.TestCase) -> None:
    # A test run again (stestr --until-failure) is wrapped once.
    test.__dict__.pop('setUp', None)
    real_setup = test.setUp

    def setUp(*args: Any, **kwargs: Any) -> None:
        rego = RegoEnforcement(shadow=True)
        rego.setUp()
        # Registered first, so it runs after the test's own cleanups,
        # which may still decide (and must still be compared).
        test.addCleanup(_finish, rego)
        real_setup(*args, **kwargs)

    # An instance attribute: the test's class and its bases stay as they
    # are, and the service's own setUp chain runs unchanged inside.
    test.setUp = setUp  # type: ignore[method-assign]


def install() -> None:
    """Wrap every TestCase run in this process from now on."""
    real_call = unittest.TestCase.__call__

    def __call__(self: unittest.TestCase, *args: Any, **kwargs: Any) -> Any:
        _wrap_setup(self)
        return real_call(self, *args, **kwargs)

    unittest.TestCase.__call__ = __call__  # type: ignore[method-assign]

    # Where the fixture's time goes: converting each distinct rule table.
    real_decider_for = rego_enforcement._decider_for

    def _decider_for(*args: Any) -> Any:
        start = time.perf_counter()
        try:
            return real_decider_for(*args)
        finally:
            totals['conversions'] = len(rego_enforcement._converted)
            totals['convert_seconds'] += time.perf_counter() - start

    rego_enforcement._decider_for = _decider_for
    directory = os.environ.get(TOTALS_ENV)
    if directory:
        atexit.register(write_totals, directory)


def write_totals(directory: str) -> None:
    """DIR/rego-<pid>.json, when this process ran a test."""
    if not totals['tests']:
        return  # stestr's --list run, for example
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f'rego-{os.getpid()}.json')
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(totals, f)


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[0] != '-m':
        sys.exit('usage: python -m oslo_opa.testing.rego_run -m MODULE ...')
    install()
    sys.argv = [argv[1], *argv[2:]]
    runpy.run_module(argv[1], run_name='__main__', alter_sys=True)


if __name__ == '__main__':
    main(sys.argv[1:])
