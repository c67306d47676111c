"""In-process Rego evaluation of a converted directory with regopy.

A converted directory is compiled into one small regopy bundle per rule
(the rule's module, the modules it reads, the helper library and any
extra hand-written modules), built on first use and reused: regopy's
query cost grows with bundle size, and ``Interpreter.query()`` would
recompile the policy for every decision.

Only ``allow`` is ever read, and only the exact result ``true`` allows:
undefined, false, a non-boolean or an engine error all deny.  regopy's
``Output.expressions()`` is never called (it aborts the process on an
undefined result).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from typing import Any

import regopy

from oslo_opa import manifest as manifest_mod
from oslo_opa.errors import PolicyLoadError

_TRUE = '{"expressions":[true]}'


def read_modules(directory: str) -> dict[str, str]:
    """Every non-test ``.rego`` file under directory: relpath -> text."""
    modules = {}
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
        for name in sorted(files):
            if not name.endswith('.rego') or name.endswith('_test.rego'):
                continue
            path = os.path.join(root, name)
            rel = os.path.relpath(path, directory)
            try:
                with open(path, encoding='utf-8') as f:
                    modules[rel] = f.read()
            except (OSError, UnicodeDecodeError) as e:
                raise PolicyLoadError(f'{path}: cannot read: {e}') from e
    return modules


class RegoPolicy:
    """A converted directory, ready to decide rules in this process.

    :param directory: the output of ``oslo-opa convert``.
    :param data: a base document made available as ``data`` (must not
        collide with the policy's packages).
    :raises PolicyLoadError: when the manifest or a module can't be read.
    """

    def __init__(
        self, directory: str, data: Mapping[str, Any] | None = None
    ) -> None:
        self.directory = directory
        self.manifest = manifest_mod.load(directory)
        self.modules = read_modules(directory)
        self.data_json = json.dumps(data) if data else None
        owned = {e.module for e in self.manifest.rules.values()}
        for entry in self.manifest.rules.values():
            if entry.module not in self.modules:
                raise PolicyLoadError(
                    f'{os.path.join(directory, entry.module)}: missing; '
                    f'the manifest lists it for rule {entry.name!r}'
                )
        # Library and hand-written modules go into every bundle.
        self._shared = [m for m in self.modules if m not in owned]
        self._bundles: dict[str, Any] = {}
        self._build_lock = threading.Lock()
        self._local = threading.local()

    def _interpreter(self) -> regopy.Interpreter:
        it = getattr(self._local, 'interpreter', None)
        if it is None:
            it = self._local.interpreter = regopy.Interpreter()
        return it

    def bundle(self, rule: str) -> Any:
        """The compiled bundle deciding rule (built once).

        :raises KeyError: rule is not in the manifest.
        :raises PolicyLoadError: the modules do not compile.
        """
        bundle = self._bundles.get(rule)
        if bundle is not None:
            return bundle
        with self._build_lock:
            bundle = self._bundles.get(rule)
            if bundle is None:
                bundle = self._bundles[rule] = self._build(rule)
        return bundle

    def _build(self, rule: str) -> Any:
        entry = self.manifest.rules[rule]
        names = self._shared + [
            self.manifest.rules[r].module for r in self.manifest.closure(rule)
        ]
        it = regopy.Interpreter()
        try:
            if self.data_json:
                it.add_data_json(self.data_json)
            for name in names:
                it.add_module(name, self.modules[name])
            bundle = it.build(None, [entry.path, _state_path(entry.path)])
        except regopy.RegoError as e:
            raise PolicyLoadError(
                f'{self.directory}: rule {rule!r} does not compile: {e}'
            ) from e
        if not bundle.ok():
            raise PolicyLoadError(
                f'{self.directory}: rule {rule!r} does not compile: '
                f'{bundle.node()}'
            )
        return bundle

    def evaluate(self, rule: str, input_doc: Mapping[str, Any]) -> bool:
        """True only when the rule's ``allow`` is exactly true.

        :raises KeyError: rule is not in the manifest.
        :raises PolicyLoadError: the rule's modules do not compile.
        :raises regopy.RegoError: the engine failed on this input.
        """
        bundle = self.bundle(rule)
        it = self._interpreter()
        it.set_input(regopy.Input(input_doc))
        out = it.query_bundle_entrypoint(
            bundle, self.manifest.rules[rule].path
        )
        return out.ok() and str(out) == _TRUE

    def state(self, rule: str, input_doc: Mapping[str, Any]) -> str | None:
        """The rule's three-valued ``state`` ("t", "f", "e") or None.

        For explaining a decision; :meth:`evaluate` is the decision.
        """
        bundle = self.bundle(rule)
        it = self._interpreter()
        it.set_input(regopy.Input(input_doc))
        path = _state_path(self.manifest.rules[rule].path)
        out = it.query_bundle_entrypoint(bundle, path)
        return _STATES.get(str(out)) if out.ok() else None


_STATES = {'{"expressions":["%s"]}' % s: s for s in 'tfe'}


def _state_path(allow_path: str) -> str:
    return allow_path.rsplit('/', 1)[0] + '/state'
