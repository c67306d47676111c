"""Compiling and evaluating the tests in workers (``run``).

A reply is judged as ``opa test`` would (judge.py).  A test that kills
the worker is an error naming the signal, a test running past
``timeout`` is an error, and the worker is restarted for the next tests.
When compiling a batch of tests crashes regopy, they are compiled in
halves, and so on, so that only the tests regopy cannot compile are
errors.

A split test whose steps' ``with data.P as C`` modifiers were left out
(see patches.py) runs in that data patch's *variant*: its batches are
compiled apart, without the modules whose package is P or below it and
with C at P in the data, which is what OPA evaluates the modifier as
(regopy compiling it as written takes minutes on a converted
directory).  The patch goes only into the data handed to regopy:
``_check_conflicts`` checks the data as loaded against every rule, and
no rule a variant keeps can conflict with its patch.
"""

from __future__ import annotations

import collections
import copy
import json
import os
import re
import threading
import time
from collections.abc import Sequence
from typing import Any

from oslo_opa.rego_errors import messages
from oslo_opa.regotest.batches import Batcher
from oslo_opa.regotest.errors import RegoTestError
from oslo_opa.regotest.judge import judge
from oslo_opa.regotest.loader import _load
from oslo_opa.regotest.modules import _check_conflicts, _Module, _Step, _Test
from oslo_opa.regotest.patches import Patch
from oslo_opa.regotest.results import TestResult
from oslo_opa.regotest.split import _name_tests, _split_tests
from oslo_opa.regotest.worker import _Died, _Worker

# Compiling every module at once may take a while on a big directory.
MIN_COMPILE_TIMEOUT = 120.0
# Workers evaluating batches side by side.
WORKERS = min(os.cpu_count() or 1, 4)


class _Runner:
    """Compile the modules in a worker and evaluate tests there.

    regopy's query cost grows with the size of the bundle (a few ms per
    query on a whole converted directory, a tenth of a ms on the modules
    a rule reads), so tests are compiled in batches of test modules with
    only the modules they read (batches run side by side, one worker
    each), and a variant's tests apart from the others; the modules no
    test reads are compiled too, so that what does not compile stops the
    run, as in opa test.
    """

    def __init__(
        self, modules: list[_Module], data: dict[str, Any], timeout: float
    ) -> None:
        self.modules = modules
        self.data = data
        self.timeout = timeout
        self.compile_timeout = max(MIN_COMPILE_TIMEOUT, timeout)
        self.worker = _Worker()
        self.owner = {id(t): m for m in modules for t in m.tests}
        self.batcher = Batcher(modules, self.owner)
        self._variants: dict[Patch, tuple[set[int], dict[str, Any]]] = {}

    def close(self) -> None:
        self.worker.stop()

    def _result(self, test: _Test, **kw: Any) -> TestResult:
        module = self.owner[id(test)]
        return TestResult(
            package=module.package_name,
            name=test.name,
            file=module.file,
            row=test.row,
            col=test.col,
            **kw,
        )

    def _load(
        self,
        worker: _Worker,
        texts: list[tuple[str, str]],
        tests: list[_Test],
        patch: Patch = (),
    ) -> None:
        """Compile texts with the tests' entrypoints, in patch's variant
        of the data.

        :raises _Died: regopy crashed or ran out of time.
        :raises RegoTestError: the modules do not compile.
        """
        reply = worker.call(
            {
                'op': 'load',
                'modules': texts,
                'data': self._data(texts, patch),
                'entries': [
                    s.entry
                    for t in tests
                    for s in (t.steps or [_Step(t.entry, None)])
                ],
            },
            self.compile_timeout,
        )
        if not reply.get('ok'):
            named = dict(texts)
            msgs = [
                m
                for raw in reply.get('errors', [])
                for m in messages(raw, named)
            ]
            raise RegoTestError('; '.join(msgs) or 'regopy: unknown error')

    def _data(
        self, texts: list[tuple[str, str]], patch: Patch = ()
    ) -> dict[str, Any]:
        """The data the modules can read, in patch's variant: regopy
        copies all of it into every bundle (a converted directory's
        manifest: 170 kB)."""
        data = self._variant(patch)[1]
        names = {name for name, _ in texts}
        roots = {path[0] for path, _ in patch}
        for m in self.modules:
            if m.file in names:
                for p in (*m.reads, tuple(m.package)):
                    if not p:
                        return data
                    roots.add(p[0])
        return {k: v for k, v in data.items() if k in roots}

    def _variant(self, patch: Patch) -> tuple[set[int], dict[str, Any]]:
        """The ids of the modules patch leaves out (every one whose
        package is at or below one of its paths) and the data with each
        constant at its path."""
        if patch not in self._variants:
            out = {
                id(m)
                for m in self.modules
                for path, _ in patch
                if tuple(m.package[: len(path)]) == path
            }
            data = self.data
            if patch:
                data = copy.deepcopy(data)
            for path, value in patch:
                node = data
                for key in path[:-1]:
                    node = node.setdefault(key, {})
                node[path[-1]] = json.loads(value)
            self._variants[patch] = (out, data)
        return self._variants[patch]

    def _evaluate(
        self,
        worker: _Worker,
        texts: list[tuple[str, str]],
        tests: list[_Test],
        results: dict[int, TestResult],
        patch: Patch = (),
    ) -> None:
        """Evaluate tests in one compilation of texts (in patch's variant
        of the data), starting the worker again after a test crashes it.

        :raises _Died: compiling crashed (or timed out).
        :raises RegoTestError: the modules do not compile.
        """
        self._load(worker, texts, tests, patch)
        named = dict(texts)
        todo = collections.deque(tests)
        while todo:
            # Every test in one request; a reply comes as each is done.
            worker.send(
                {
                    'op': 'run',
                    'tests': [
                        [
                            [s.entry, s.input_term]
                            for s in (t.steps or [_Step(t.entry, None)])
                        ]
                        for t in todo
                    ],
                }
            )
            while todo:
                test = todo.popleft()
                t0 = time.monotonic_ns()
                try:
                    reply = worker.receive(self.timeout)
                except _Died as died:
                    results[id(test)] = self._result(
                        test,
                        error=died.message('evaluating it'),
                        error_code=died.code,
                        duration_ns=time.monotonic_ns() - t0,
                    )
                    if todo:
                        self._load(worker, texts, list(todo), patch)
                    break
                results[id(test)] = judge(test, reply, named, self._result)

    # --- which modules a test needs --------------------------------------

    def _batches(
        self, tests: list[_Test]
    ) -> list[tuple[list[_Module], list[_Test], Patch]]:
        """Tests grouped by data patch (the variant they run in), then by
        module, modules batched while the modules they read stay few."""
        by_patch: dict[Patch, list[_Test]] = {}
        for test in tests:
            by_patch.setdefault(test.patch, []).append(test)
        out = []
        for patch, group in by_patch.items():
            left_out = self._variant(patch)[0]
            out += [
                (modules, batch, patch)
                for modules, batch in self.batcher.batches(group, left_out)
            ]
        return out

    # --- running ---------------------------------------------------------

    def run(self, tests: list[_Test], results: dict[int, TestResult]) -> None:
        """Evaluate tests into results.

        :raises RegoTestError: the modules do not compile.
        """
        batches = collections.deque(self._batches(tests))
        # What no test reads is compiled too: opa test refuses a run
        # where any module does not compile.
        covered = {id(m) for modules, _, _ in batches for m in modules}
        rest = [m for m in self.modules if id(m) not in covered]
        if rest or not batches:
            needed = set().union(*(self.batcher.closure(m) for m in rest))
            texts = [
                (m.file, m.render())
                for m in self.modules
                if id(m) in needed or not batches
            ]
            try:
                self._load(self.worker, texts, [])
            except RegoTestError as e:
                raise RegoTestError(f'does not compile (regopy): {e}') from e
            except _Died:
                pass  # a test regopy cannot compile: found below
        workers = [self.worker] + [
            _Worker() for _ in range(min(len(batches), WORKERS) - 1)
        ]
        stop = threading.Event()
        errors: list[BaseException] = []

        def work(worker: _Worker) -> None:
            try:
                while not stop.is_set():
                    try:
                        batch = batches.popleft()
                    except IndexError:
                        return
                    self._batch(worker, *batch, results)
            except BaseException as e:  # noqa: BLE001 - raised below
                errors.append(e)
                stop.set()

        threads = [
            threading.Thread(target=work, args=(w,), daemon=True)
            for w in workers[1:]
        ]
        for thread in threads:
            thread.start()
        try:
            work(workers[0])
        finally:
            stop.set()
            for thread in threads:
                thread.join()
            for worker in workers[1:]:
                worker.stop()
        if errors:
            raise errors[0]

    def _batch(
        self,
        worker: _Worker,
        modules: list[_Module],
        tests: list[_Test],
        patch: Patch,
        results: dict[int, TestResult],
    ) -> None:
        texts = [(m.file, m.render()) for m in modules]
        try:
            self._evaluate(worker, texts, tests, results, patch)
            return
        except RegoTestError as e:
            raise RegoTestError(f'does not compile (regopy): {e}') from e
        except _Died:
            pass
        rest = [t for t in tests if id(t) not in results]
        # Is it the tests, or the modules they read?
        try:
            self._load(
                worker,
                [(m.file, m.render(set())) for m in modules],
                [],
                patch,
            )
        except (_Died, RegoTestError) as e:
            why = (
                e.message('compiling the modules it reads')
                if isinstance(e, _Died)
                else f'the modules it reads do not compile: {e}'
            )
            for test in rest:
                results[id(test)] = self._result(test, error=why)
            return
        self._bisect(worker, modules, rest, patch, results)

    def _bisect(
        self,
        worker: _Worker,
        modules: list[_Module],
        tests: list[_Test],
        patch: Patch,
        results: dict[int, TestResult],
    ) -> None:
        """Compile the tests without the others, halving the set until
        the tests regopy cannot compile are alone."""
        if not tests:
            return
        keep = {id(t) for t in tests}
        texts = [(m.file, m.render(keep)) for m in modules]
        try:
            self._evaluate(worker, texts, tests, results, patch)
            return
        except (_Died, RegoTestError) as e:
            failure = e
        rest = [t for t in tests if id(t) not in results]
        if len(rest) == 1 and len(tests) == 1:
            if isinstance(failure, _Died):
                results[id(rest[0])] = self._result(
                    rest[0],
                    error=failure.message('compiling it'),
                    error_code=failure.code,
                )
            else:
                results[id(rest[0])] = self._result(
                    rest[0], error=f'does not compile in regopy: {failure}'
                )
        elif len(rest) < len(tests):
            self._bisect(worker, modules, rest, patch, results)
        else:
            half = len(rest) // 2
            self._bisect(worker, modules, rest[:half], patch, results)
            self._bisect(worker, modules, rest[half:], patch, results)


def run(
    paths: list[str],
    run: str | None = None,
    timeout: float = 30.0,
    ignore: Sequence[str] = (),
) -> list[TestResult]:
    """Run the Rego tests under paths with regopy, as ``opa test`` would.

    :param paths: ``.rego``, JSON and YAML files, or directories searched
        recursively.
    :param run: only tests whose full name (``data.pkg.test_x``) this
        regular expression matches (searched, as opa test ``--run``).
    :param timeout: seconds one test may run before it is an error.
    :param ignore: glob patterns (Go's filepath.Match, as opa test
        ``--ignore``): the files and directories below the paths whose
        name matches one are not loaded.
    :returns: one result per test, in file and source order.
    :raises RegoTestError: a path does not exist, a file cannot be read
        or loaded, the modules do not compile, ``run`` is not a regular
        expression.
    """
    if not paths:
        raise RegoTestError('specify at least one file or directory')
    if not timeout > 0:
        raise RegoTestError(f'timeout must be positive, not {timeout}')
    try:
        regex = re.compile(run) if run else None
    except re.error as e:
        raise RegoTestError(
            f'{run!r} is not a valid regular expression: {e}'
        ) from e
    modules, data = _load(paths, ignore)
    _check_conflicts(modules, data)
    _name_tests(modules)
    _split_tests(modules, data)
    runner = _Runner(modules, data, timeout)
    chosen = [
        t
        for m in modules
        for t in m.tests
        if regex is None or regex.search(f'{m.package_name}.{t.name}')
    ]
    results: dict[int, TestResult] = {}
    for test in chosen:
        if test.skip:
            results[id(test)] = runner._result(test, skipped=True)
        elif test.function:
            package = runner.owner[id(test)].package_name
            results[id(test)] = runner._result(
                test,
                error=f'function {package}.{test.name} used as reference, '
                'not called',
                error_code='rego_type_error',
            )
    try:
        runner.run([t for t in chosen if id(t) not in results], results)
    finally:
        runner.close()
    return [results[id(t)] for t in chosen]
