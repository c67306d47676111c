"""Run Rego ``test_`` rules with the embedded engine (regopy), as
``opa test`` does, without an OPA binary.

The modules, each with one job:

* ``loader``: find and load modules and data, as ``opa test PATH...``
  (``--ignore`` patterns included);
* ``lexer``: a small Rego lexer;
* ``modules``: scan modules for their package, rules and tests, and the
  rewrites regopy needs;
* ``split``: name tests, and split those whose expressions are
  independent (``v := <constant>`` then ``... with input as v``
  included), their ``with data.P as C`` made a variant of the modules
  and data where that is what OPA evaluates;
* ``worker``: the worker process regopy runs in (it can crash or hang),
  which captures each test's ``print()`` output;
* ``batches``: which modules a test reads, and batches of tests that
  share them;
* ``runner``: compile and evaluate tests in workers (``run``);
* ``judge``: a test's result from a worker's reply;
* ``report``: render results as ``opa test`` does.

Not matched: OPA's compile-time checks (unsafe variables, type errors)
refuse the whole run (exit 1) where regopy compiles and the test fails;
the cases of a test object whose body fails are not seen (OPA traces
them), only the cases it produced count; duplicate test names across
files are numbered in file order (OPA's order is not fixed); the
``print()`` output of a test that crashes regopy or times out is lost,
and regopy formats some printed values its own way (it does not decode
escapes in strings).
"""

# _scan, _name_tests and _split_tests: for the unit tests of the rewrites.
from oslo_opa.regotest.batches import BATCH_MODULES
from oslo_opa.regotest.errors import RegoTestError
from oslo_opa.regotest.loader import DATA_EXTENSIONS
from oslo_opa.regotest.modules import SKIP_PREFIX, TEST_PREFIX
from oslo_opa.regotest.modules import _scan as _scan
from oslo_opa.regotest.report import (
    exit_code,
    go_duration,
    render_json,
    render_text,
)
from oslo_opa.regotest.results import TestResult
from oslo_opa.regotest.runner import MIN_COMPILE_TIMEOUT, WORKERS, run
from oslo_opa.regotest.split import _name_tests as _name_tests
from oslo_opa.regotest.split import _split_tests as _split_tests
from oslo_opa.regotest.worker import WORKER_MEMORY

__all__ = [
    'BATCH_MODULES',
    'DATA_EXTENSIONS',
    'MIN_COMPILE_TIMEOUT',
    'SKIP_PREFIX',
    'TEST_PREFIX',
    'WORKERS',
    'WORKER_MEMORY',
    'RegoTestError',
    'TestResult',
    'exit_code',
    'go_duration',
    'render_json',
    'render_text',
    'run',
]
