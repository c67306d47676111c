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

Inputs are projected: a rule whose modules are as the converter wrote
them (their SHA-256 matches the manifest) is sent only the credential
and target keys its checks read.  A hand-edited module gets the whole
input, so Rego that reads more still works.

Most inputs are ASCII, and Python's ``str.lower()`` of an ASCII string is
Rego's ``lower()``.  So each such rule has a second bundle in which the
library's ``py_lower`` (``casefold.rego``: tables and a regex per call)
is plain ``lower()``; an input whose every string is ASCII is decided
there, anything else in the full bundle.  A rule qualifies when its
modules are unedited and lower-case no text of their own (the manifest's
``ascii_lowering``).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterable, Mapping
from typing import Any

import regopy
import yaml

from oslo_opa import inputs
from oslo_opa import manifest as manifest_mod
from oslo_opa.errors import OsloOpaError, PolicyLoadError

_TRUE = '{"expressions":[true]}'
_FALSE = '{"expressions":[false]}'
CASEFOLD = 'oslo_opa/casefold.rego'
ASCII_CASEFOLD = """package oslo_opa.lib

py_lower(s) := lower(s)
"""
_STATES = {'{"expressions":["%s"]}' % s: s for s in 'tfe'}


class EvaluationError(OsloOpaError):
    """The engine gave no boolean decision (the message names the rule)."""


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


def _data_files(paths: Iterable[str]) -> list[str]:
    files = []
    for path in paths:
        if os.path.isdir(path):
            for name in sorted(os.listdir(path)):
                if name.endswith(('.json', '.yaml', '.yml')):
                    files.append(os.path.join(path, name))
        else:
            files.append(path)
    return files


def load_data(paths: Iterable[str]) -> dict[str, Any]:
    """Merge the top-level objects of JSON/YAML files into one document.

    :raises PolicyLoadError: naming the file that cannot be read, is not
        an object, or defines a key another file defines.
    """
    data: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for path in _data_files(paths):
        try:
            with open(path, encoding='utf-8') as f:
                doc = yaml.safe_load(f)
        except (OSError, UnicodeDecodeError) as e:
            raise PolicyLoadError(f'{path}: cannot read data: {e}') from e
        except yaml.YAMLError as e:
            mark = getattr(e, 'problem_mark', None)
            where = f'{path}:{mark.line + 1}' if mark else path
            raise PolicyLoadError(f'{where}: not valid JSON or YAML') from e
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise PolicyLoadError(f'{path}: data must be an object')
        for key, value in doc.items():
            if key in data:
                raise PolicyLoadError(
                    f'{path}: data key {key!r} is also defined in '
                    f'{origin[key]}'
                )
            data[key] = value
            origin[key] = path
    return data


def _all_ascii(doc: Any) -> bool:
    """Every string in doc (keys included) is ASCII."""
    try:
        return json.dumps(doc, ensure_ascii=False).isascii()
    except (TypeError, ValueError):
        return False


def _tidy(doc: Mapping[str, Any]) -> bool:
    """Python's lib.tidy: roles a list of strings, other credentials
    scalars, target values printable (floats are strings by now)."""
    try:
        for key, value in doc['credentials'].items():
            if key == 'roles':
                if not isinstance(value, list) or not all(
                    isinstance(r, str) for r in value
                ):
                    return False
            elif isinstance(value, (list, dict)):
                return False
        return not any(
            isinstance(v, (list, dict, float)) for v in doc['target'].values()
        )
    except (KeyError, AttributeError, TypeError):
        return False


def _fast_path(allow_path: str) -> str:
    return allow_path.rsplit('/', 1)[0] + '/_fast'


def _state_path(allow_path: str) -> str:
    return allow_path.rsplit('/', 1)[0] + '/state'


class RegoPolicy:
    """A converted directory, ready to decide rules in this process.

    Thread-safe: interpreters hold input state, so each decision borrows
    one from a pool (one per concurrent caller, threads or greenlets);
    bundles are built once under a lock and shared.

    :param directory: the output of ``oslo-opa convert``.
    :param data: a base document made available as ``data``.
    :param strict_builtin_errors: a builtin error is an engine error.
    :raises PolicyLoadError: when the manifest or a module can't be read.
    """

    def __init__(
        self,
        directory: str,
        data: Mapping[str, Any] | None = None,
        strict_builtin_errors: bool = True,
    ) -> None:
        self.directory = directory
        self.manifest = manifest_mod.load(directory)
        self.modules = read_modules(directory)
        self.data_json = json.dumps(data) if data else None
        self.strict_builtin_errors = strict_builtin_errors
        owned = {e.module for e in self.manifest.rules.values()}
        for entry in self.manifest.rules.values():
            if entry.module not in self.modules:
                raise PolicyLoadError(
                    f'{os.path.join(directory, entry.module)}: missing; '
                    f'the manifest lists it for rule {entry.name!r}'
                )
        # Library and hand-written modules go into every bundle.
        self._shared = [m for m in self.modules if m not in owned]
        self._edited = {
            e.name
            for e in self.manifest.rules.values()
            if e.sha256 is None
            or hashlib.sha256(
                self.modules[e.module].encode('utf-8')
            ).hexdigest()
            != e.sha256
        }
        self._projection: dict[str, tuple[list[str], list[str]] | None] = {}
        self._ascii_ok = {
            name: CASEFOLD in self.modules
            and not any(r in self._edited for r in self.manifest.closure(name))
            and all(
                self.manifest.rules[r].ascii_lowering
                for r in self.manifest.closure(name)
            )
            for name in self.manifest.rules
        }
        # Rules whose _fast is their allow for a tidy input.
        self._fast_ok = {
            name: not any(
                r in self._edited for r in self.manifest.closure(name)
            )
            and all(
                self.manifest.rules[r].fast_entry
                for r in self.manifest.closure(name)
            )
            for name in self.manifest.rules
        }
        self._bundles: dict[tuple[str, bool], Any] = {}
        self._build_lock = threading.Lock()
        self._pool: list[regopy.Interpreter] = []
        self._pool_lock = threading.Lock()

    # --- compiling -------------------------------------------------------

    def _interpreter(
        self, *names: str, ascii_only: bool = False
    ) -> regopy.Interpreter:
        it = regopy.Interpreter()
        it.strict_built_in_errors = self.strict_builtin_errors
        if self.data_json:
            it.add_data_json(self.data_json)
        for name in names:
            text = self.modules[name]
            if ascii_only and name == CASEFOLD:
                text = ASCII_CASEFOLD
            it.add_module(name, text)
        return it

    def _compile(
        self, names: list[str], entrypoints: list[str], what: str, **kw: Any
    ) -> Any:
        """A bundle of the named modules, or PolicyLoadError naming what."""
        try:
            it = self._interpreter(*names, **kw)
            bundle = it.build(None, entrypoints)
        except regopy.RegoError as e:
            raise PolicyLoadError(
                f'{self.directory}: {what} does not compile: {e}'
            ) from e
        if not bundle.ok():
            raise PolicyLoadError(
                f'{self.directory}: {what} does not compile: {bundle.node()}'
            )
        return bundle

    def validate(self) -> None:
        """Compile every module together once.

        :raises PolicyLoadError: naming what does not compile.
        """
        paths = [e.path for e in self.manifest.rules.values()]
        if paths:
            self._compile(list(self.modules), paths, 'the policy')

    def bundle(self, rule: str, ascii_only: bool = False) -> Any:
        """The compiled bundle deciding rule (built once).

        :param ascii_only: the bundle for inputs whose strings are all
            ASCII, where it exists (else the full one).
        :raises KeyError: rule is not in the manifest.
        :raises PolicyLoadError: the modules do not compile.
        """
        key = (rule, ascii_only and self._ascii_ok[rule])
        bundle = self._bundles.get(key)
        if bundle is not None:
            return bundle
        with self._build_lock:
            bundle = self._bundles.get(key)
            if bundle is None:
                bundle = self._bundles[key] = self._build(*key)
        return bundle

    def _build(self, rule: str, ascii_only: bool) -> Any:
        entry = self.manifest.rules[rule]
        names = self._shared + [
            self.manifest.rules[r].module for r in self.manifest.closure(rule)
        ]
        entrypoints = [
            entry.path,
            _state_path(entry.path),
            _fast_path(entry.path),
        ]
        return self._compile(
            names, entrypoints, f'rule {rule!r}', ascii_only=ascii_only
        )

    # --- inputs ------------------------------------------------------------

    def projection(self, rule: str) -> tuple[list[str], list[str]] | None:
        """(credential keys, target keys) rule reads, or None for all."""
        if rule not in self._projection:
            closure = self.manifest.closure(rule)
            if any(r in self._edited for r in closure):
                self._projection[rule] = None
            else:
                creds: list[str] = []
                target: list[str] = []
                for r in closure:
                    entry = self.manifest.rules[r]
                    creds += [k for k in entry.credentials if k not in creds]
                    target += [k for k in entry.target_keys if k not in target]
                self._projection[rule] = (creds, target)
        return self._projection[rule]

    def input_for(
        self, rule: str, creds: Mapping[str, Any], target: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The (projected) input document for one decision.

        :raises KeyError: rule is not in the manifest.
        :raises inputs.UnrepresentableInput: a value cannot be carried.
        """
        if rule not in self.manifest.rules:
            raise KeyError(rule)
        keys = self.projection(rule)
        if keys is not None:
            creds = {k: creds[k] for k in keys[0] if k in creds}
            target = {k: target[k] for k in keys[1] if k in target}
        return inputs.document(creds, target, rule)

    # --- deciding ----------------------------------------------------------

    def _query(self, rule: str, path: str, input_doc: Mapping[str, Any]):
        bundle = self.bundle(rule, ascii_only=_all_ascii(input_doc))
        with self._pool_lock:
            it = self._pool.pop() if self._pool else None
        if it is None:
            it = regopy.Interpreter()
            it.strict_built_in_errors = self.strict_builtin_errors
        try:
            it.set_input(regopy.Input(input_doc))
            out = it.query_bundle_entrypoint(bundle, path)
            return out.ok(), str(out)
        except ValueError:
            # regopy's Output parses the engine's text eagerly and raises
            # (JSONDecodeError) on some error results: no decision.
            return False, '<error>'
        finally:
            with self._pool_lock:
                self._pool.append(it)

    def evaluate(self, rule: str, input_doc: Mapping[str, Any]) -> bool:
        """The rule's ``allow``: true or false, nothing else.

        :raises KeyError: rule is not in the manifest.
        :raises PolicyLoadError: the rule's modules do not compile.
        :raises EvaluationError: the engine reported an error, or
            ``allow`` is undefined or not a boolean.
        """
        path = self.manifest.rules[rule].path
        if self._fast_ok[rule] and _tidy(input_doc):
            # No check can raise on this input: the boolean fast path is
            # the decision, without evaluating maybe_error in Rego.
            path = _fast_path(path)
        ok, text = self._query(rule, path, input_doc)
        if ok and text == _TRUE:
            return True
        if ok and text == _FALSE:
            return False
        # The engine's text may quote input values: never pass it on.
        if not ok:
            raise EvaluationError(f'rule {rule!r}: evaluation failed')
        if text == 'undefined':
            raise EvaluationError(f'rule {rule!r}: allow is undefined')
        raise EvaluationError(f'rule {rule!r}: allow is not a boolean')

    def state(self, rule: str, input_doc: Mapping[str, Any]) -> str | None:
        """The rule's three-valued ``state`` ("t", "f", "e") or None.

        For explaining a decision; :meth:`evaluate` is the decision.
        """
        path = _state_path(self.manifest.rules[rule].path)
        ok, text = self._query(rule, path, input_doc)
        return _STATES.get(text) if ok else None
