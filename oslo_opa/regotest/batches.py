"""Which modules a test reads, and batches of tests that share them:
regopy compiles each batch with only the modules its tests read."""

from __future__ import annotations

from oslo_opa.regotest.modules import _Module, _Test

# Modules compiled together, at most, when tests are run in batches.
BATCH_MODULES = 60


class Batcher:
    """The tests of one run's modules, batched (owner: test id -> the
    module that defines it)."""

    def __init__(
        self, modules: list[_Module], owner: dict[int, _Module]
    ) -> None:
        self.modules = modules
        self.owner = owner
        self._closures: dict[int, set[int]] = {}
        # Modules by package, and by every prefix of their package.
        self._at: dict[tuple[str, ...], list[_Module]] = {}
        self._under: dict[tuple[str, ...], list[_Module]] = {}

    def closure(self, root: _Module) -> set[int]:
        """ids of root and of every module it reads, transitively: those
        whose package a ``data`` reference (or the package itself) is a
        prefix of, or that are a prefix of the reference."""
        if id(root) in self._closures:
            return self._closures[id(root)]
        if not self._under:
            for m in self.modules:
                pkg = tuple(m.package)
                self._at.setdefault(pkg, []).append(m)
                for n in range(len(pkg) + 1):
                    self._under.setdefault(pkg[:n], []).append(m)
        seen = {id(root)}
        stack = [root]
        while stack:
            module = stack.pop()
            for p in [*module.reads, tuple(module.package)]:
                found = list(self._under.get(p, ()))
                for n in range(len(p)):
                    found += self._at.get(p[:n], ())
                for other in found:
                    if id(other) not in seen:
                        seen.add(id(other))
                        stack.append(other)
        self._closures[id(root)] = seen
        return seen

    def batches(
        self, tests: list[_Test], left_out: set[int]
    ) -> list[tuple[list[_Module], list[_Test]]]:
        """Tests grouped by module, modules batched while the modules
        they read stay few; modules in left_out (ids) left out."""
        by_module: dict[int, list[_Test]] = {}
        for test in tests:
            by_module.setdefault(id(self.owner[id(test)]), []).append(test)
        batches = []
        ids: set[int] = set()
        group: list[_Test] = []
        for module in self.modules:
            if id(module) not in by_module:
                continue
            closure = self.closure(module) - left_out
            if group and len(ids | closure) > BATCH_MODULES:
                batches.append((ids, group))
                ids, group = set(), []
            ids = ids | closure
            group += by_module[id(module)]
        if group:
            batches.append((ids, group))
        return [
            ([m for m in self.modules if id(m) in ids], group)
            for ids, group in batches
        ]
