"""In-process Rego evaluation of a converted directory with regopy.

A converted directory is compiled into small regopy bundles per rule,
built on first use and reused: ``Interpreter.query()`` would recompile
the policy for every decision, and a bundle query costs time in
proportion to all the Rego in the bundle (measured with regopy 1.5.2:
10 us for a one-line bundle, 200 us for one holding keystone's fast
paths), so each bundle holds only what its rule needs:

* the fast bundle, for a *tidy* input (no check can raise on it, see
  ``lib.tidy``; Python's :func:`_fast_profile` decides it here): the
  rule's ``<rule>.fast.rego`` and, renamed ``allow``, the ``_fast`` of
  each rule it reads, plus only the library files those call.  It
  answers true, false, or "maybe" when some check could still raise;
* the full bundle, for every other input and for "maybe": the rule's
  modules, the modules they read, the helper library and any extra
  hand-written modules, deciding ``allow`` itself.

Only ``allow`` is ever read, and only the exact result ``true`` allows:
undefined, false, a non-boolean or an engine error all deny.  regopy's
``Output.expressions()`` is never called (it aborts the process on an
undefined result).

Inputs are projected: a rule whose modules are as the converter wrote
them (their SHA-256 matches the manifest) is sent only the credential
and target keys its checks read.  A hand-edited module gets the whole
input, so Rego that reads more still works.

Most inputs are ASCII, and Python's ``str.lower()`` of an ASCII string is
Rego's ``lower()``.  So a rule's bundles come in variants, each exact on
the inputs it is used for, and the shape of the input picks one:

* full bundle: as written, or with ``py_lower`` (``casefold.rego``:
  tables and a regex per call) plain ``lower()`` when every string is
  ASCII;
* fast bundle: as written; or, when every string is ASCII and none reads
  like the ``str()`` of a non-string (``True``, ``42``), with
  ``lower()`` too and ``str_eq`` plain ``==`` (``PLAIN_COMPARE``); and
  then, when every role is lower case already, with the roles used as
  sent (``LOWER_ROLES``).

A rule qualifies for the ASCII variants when its modules are unedited
and lower-case no text of their own (the manifest's ``ascii_lowering``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

import regopy
import yaml

from oslo_opa import inputs, regofast
from oslo_opa import manifest as manifest_mod
from oslo_opa.errors import OsloOpaError, PolicyLoadError

_TRUE = '{"expressions":[true]}'
_FALSE = '{"expressions":[false]}'
_MAYBE = '{"expressions":["maybe"]}'
CASEFOLD = 'oslo_opa/casefold.rego'
COMPARE = 'oslo_opa/compare.rego'
_PYSTR = 'oslo_opa/pystr.rego'
ROLES = 'oslo_opa/roles.rego'
# Membership in an array is cheaper in regopy than building a set.
ASCII_ROLES = """package oslo_opa.lib

roles_list_lower := [x | some r in input.credentials.roles; x := lower(r)]
"""
# For roles that are all lower case already (as they nearly always are),
# lower() changes none of them; a call per role is a cost worth saving.
LOWER_ROLES = """package oslo_opa.lib

roles_list_lower := input.credentials.roles
"""
_SUBST = 'oslo_opa/subst.rego'
# The library files a fast path needs for each helper it calls (the file
# defining it and those it calls in turn); tests/unit/test_engine_library
# checks this against the library.
FAST_LIBRARY: dict[str, tuple[str, ...]] = {
    'roles_list_lower': (ROLES, CASEFOLD),
    'py_lower': (CASEFOLD,),
    'py_str': (_PYSTR,),
    'str_eq': (COMPARE, _PYSTR),
    'has': (_SUBST, _PYSTR),
    'subst_text': (_SUBST, _PYSTR),
    'cred_eq': (_SUBST, _PYSTR),
}
# The package a fast bundle holds its rule's fast path under, so that
# rules whose fast paths read the same share the bundle.
_SHARED_PACKAGE = 'oslo_opa.shared_fast_path'
_SHARED_ALLOW = _SHARED_PACKAGE.replace('.', '/') + '/allow'
# A fast path's own reason to say "maybe" (not a rule it reads).
_OWN_SPECIAL = re.compile(r'^_special (:= true|if (?!data\.))', re.M)
# The name _fast outside strings and comments.
# A fast path that is another rule's allow.
_ALIAS = re.compile(
    r'default _fast := false\n_fast if data\.([A-Za-z0-9_.]+)\.allow'
)
_FAST_RULE = re.compile(r'"(?:[^"\\\n]|\\.)*"|`[^`]*`|#[^\n]*|\b_fast\b')


def _rename(found: re.Match) -> str:
    return 'allow' if found.group(0) == '_fast' else found.group(0)


# The same for a simple input, where compare.rego and roles.rego are
# swapped for PLAIN_COMPARE and ASCII_ROLES, which call nothing.
FAST_LIBRARY_SIMPLE = dict(
    FAST_LIBRARY,
    roles_list_lower=(ROLES,),
    str_eq=(COMPARE,),
)
_LIB_CALL = re.compile(r'\blib\.([A-Za-z_][A-Za-z0-9_]*)')
PLAIN_COMPARE = """package oslo_opa.lib

str_eq(a, b) if a == b
"""
# A package name from the manifest, before it is written into Rego.
_PACKAGE = re.compile(r'[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*')
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


# What regopy 1.5.2 reads from a data document's JSON text keeps its
# escapes ("a\tb" is four characters there, not three), so such a data
# string would never equal the same text in the input, where a rule
# may compare them (a deny list would then fail open).
_ESCAPED = re.compile(r'["\\\x00-\x1f]')


def _unescaped(value: Any, where: str) -> None:
    """Raise PolicyLoadError for a string regopy would read wrongly."""
    stack = [(value, where)]
    while stack:
        item, at = stack.pop()
        if isinstance(item, str):
            if _ESCAPED.search(item):
                raise PolicyLoadError(
                    f'{at}: a string holding a quote, a backslash or a '
                    f'control character, which the embedded engine '
                    f'(regopy) would not read as written'
                )
        elif isinstance(item, dict):
            for k, v in item.items():
                stack.append((k, at))
                stack.append((v, f'{at}.{k}'))
        elif isinstance(item, list):
            stack.extend((v, f'{at}[{i}]') for i, v in enumerate(item))


def load_data(paths: Iterable[str], embedded: bool = False) -> dict[str, Any]:
    """Merge the top-level objects of JSON/YAML files into one document.

    :param embedded: for the embedded engine: refuse strings it cannot
        carry (see ``_ESCAPED``).
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
        if embedded:
            _unescaped(doc, path)
        for key, value in doc.items():
            if key in data:
                raise PolicyLoadError(
                    f'{path}: data key {key!r} is also defined in '
                    f'{origin[key]}'
                )
            data[key] = value
            origin[key] = path
    return data


_CONFUSABLE = frozenset(('True', 'False', 'None'))


def _all_ascii(doc: Any) -> bool:
    """Every string in doc, keys included, is ASCII (and every value is
    of a JSON type: anything else is not vouched for)."""
    stack = [doc]
    while stack:
        value = stack.pop()
        kind = type(value)
        if kind is str:
            if not value.isascii():
                return False
        elif kind is dict:
            for key, item in value.items():
                if not (type(key) is str and key.isascii()):
                    return False
                stack.append(item)
        elif kind is list:
            stack.extend(value)
        elif kind not in (bool, int) and value is not None:
            return False
    return True


# Converted inputs each pooled interpreter keeps (a few KiB each).
_INPUTS_KEPT = 256

# The fast bundle variants, by the input's shape (see _fast_profile).
_FULL = 0  # the library as written
_SIMPLE = 1  # ASCII and plain: ASCII_CASEFOLD, PLAIN_COMPARE, ASCII_ROLES
_LOWER = 2  # _SIMPLE, and every role lower case already: LOWER_ROLES


def _plain_ascii(text: str) -> bool:
    return (
        text.isascii()
        and text not in _CONFUSABLE
        and not text.lstrip('-').isdigit()
    )


def _fast_profile(
    doc: Mapping[str, Any],
) -> tuple[int, tuple | None, Mapping[str, Any]] | None:
    """What the fast path needs to know of a decision's input, in one pass.

    None when the fast path cannot decide it: lib.tidy does not hold
    (roles not a list of strings, another credential an object or a
    list, a target value a list, an object or a float), once credentials
    holding a list of one string are folded to that string.  Otherwise
    (the fast variant the input may use, a key equal for equal fast-path
    documents or None, the credentials to send): types are in the key,
    as True and 1 are equal in Python and not in Rego.  Values of a
    subclass of str, int or bool take the full variant and no key.

    The fold is exact for the converter's fast paths: they read a
    credential other than roles only through generic checks, which
    oslo.policy walks into a list item by item, so ``["service"]``
    decides every such check as ``"service"`` does (oslo.context's
    ``service_roles`` on a service's token).  Hand-edited rules have no
    fast path.
    """
    try:
        parts = (doc['credentials'].items(), doc['target'].items())
    except (KeyError, AttributeError, TypeError):
        return None
    simple = lower = keyed = True
    key = []
    folded = {}
    for is_creds, items in zip((True, False), parts, strict=True):
        part = []
        for name, value in items:
            kind = type(value)
            if is_creds and name == 'roles':
                if not isinstance(value, list):
                    return None
                for role in value:
                    if type(role) is not str:
                        if not isinstance(role, str):
                            return None
                        simple = keyed = False
                    elif simple and not _plain_ascii(role):
                        simple = False
                    elif lower and not role.islower() and role != role.lower():
                        lower = False
                if kind is not list:
                    simple = keyed = False
                value = tuple(value)
            elif kind is str:
                if simple and not _plain_ascii(value):
                    simple = False
            elif (
                is_creds
                and kind is list
                and len(value) == 1
                and type(value[0]) is str
            ):
                value = folded[name] = value[0]
                kind = str
                if simple and not _plain_ascii(value):
                    simple = False
            elif is_creds and kind is list and not value:
                value = ()  # tidy: a check walks it and finds nothing
            elif isinstance(value, (list, dict)) or (
                not is_creds and isinstance(value, float)
            ):
                return None
            elif kind is not bool and kind is not int and value is not None:
                simple = keyed = False
            if simple and not (type(name) is str and name.isascii()):
                simple = False
            part.append((name, kind, value))
        key.append(tuple(part))
    variant = (_LOWER if lower else _SIMPLE) if simple else _FULL
    creds = doc['credentials']
    if folded:
        creds = {**creds, **folded}
    return variant, tuple(key) if keyed else None, creds


def _fast_path(allow_path: str) -> str:
    return allow_path.rsplit('/', 1)[0] + '/_fast'


def _decision_path(allow_path: str) -> str:
    return allow_path.rsplit('/', 1)[0] + '/_fast_decision'


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
        # As UTF-8 text: regopy keeps \u escapes as they are.
        self.data_json = json.dumps(data, ensure_ascii=False) if data else None
        self.strict_builtin_errors = strict_builtin_errors
        owned = {e.module for e in self.manifest.rules.values()}
        owned |= {
            e.fast_module
            for e in self.manifest.rules.values()
            if e.fast_module in self.modules
        }
        for entry in self.manifest.rules.values():
            if entry.module not in self.modules:
                raise PolicyLoadError(
                    f'{os.path.join(directory, entry.module)}: missing; '
                    f'the manifest lists it for rule {entry.name!r}'
                )
        # Library and hand-written modules go into every full bundle.
        self._shared = [m for m in self.modules if m not in owned]
        self._edited = {
            e.name for e in self.manifest.rules.values() if self._is_edited(e)
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
        # The library files each rule's fast path needs, if it has one,
        # and what tells its fast bundle from another rule's.
        self._fast_library: dict[str, list[str] | None] = {}
        self._fast_digest: dict[str, str] = {}
        clash = any(
            self._package(r) == _SHARED_PACKAGE for r in self.manifest.rules
        )
        for name in self.manifest.rules:
            library = None if clash else self._library_for(name)
            self._fast_library[name] = library
            if library is not None:
                others = [r for r in self.manifest.closure(name) if r != name]
                what = [self._shared_text(name), *library, '', *sorted(others)]
                self._fast_digest[name] = hashlib.sha256(
                    '\0'.join(what).encode('utf-8')
                ).hexdigest()
        # Rules whose fast path can never say "maybe": none of the rules
        # in their closure has a _special of its own (only references to
        # the others'), so _fast is the decision.
        self._direct = {
            name: self._fast_library[name] is not None
            and not any(
                _OWN_SPECIAL.search(
                    self.modules[self.manifest.rules[r].fast_module]
                )
                for r in self.manifest.closure(name)
            )
            for name in self.manifest.rules
        }
        # Rules whose fast path is another rule's allow and nothing else
        # (rule:admin_required): decided in that rule's fast bundle.
        self._alias = {
            name: self._aliased(name)
            for name in self.manifest.rules
            if self._fast_library[name] is not None
        }
        self._bundles: dict[tuple[str, bool, bool], Any] = {}
        self._build_lock = threading.Lock()
        # Interpreters, each with the inputs it has converted lately
        # (fast-path documents repeat: the same caller, the same keys).
        self._pool: list[tuple[regopy.Interpreter, dict]] = []
        self._pool_lock = threading.Lock()

    def _is_edited(self, entry: manifest_mod.RuleEntry) -> bool:
        """Whether entry's files differ from what the converter wrote."""

        def changed(name: str | None, digest: str | None) -> bool:
            text = self.modules.get(name) if name else None
            return (
                text is None
                or digest is None
                or hashlib.sha256(text.encode('utf-8')).hexdigest() != digest
            )

        if changed(entry.module, entry.sha256):
            return True
        # A manifest from before the fast path had its own file has none.
        return entry.fast_module is not None and changed(
            entry.fast_module, entry.fast_sha256
        )

    def _library_for(
        self, rule: str, table: Mapping[str, tuple[str, ...]] = FAST_LIBRARY
    ) -> list[str] | None:
        """The library files rule's fast bundle needs (table: for which
        inputs); None when the rule has no usable fast path (edited, or
        calling an unknown helper)."""
        files: list[str] = []
        for r in self.manifest.closure(rule):
            entry = self.manifest.rules[r]
            text = self.modules.get(entry.fast_module or '')
            if (
                r in self._edited
                or text is None
                or not _PACKAGE.fullmatch(self._package(r))
            ):
                return None
            for call in _LIB_CALL.findall(text):
                needed = table.get(call)
                if needed is None or any(
                    f not in self.modules for f in needed
                ):
                    return None
                files += [f for f in needed if f not in files]
        return files

    def _aliased(self, rule: str) -> str:
        """The rule whose fast bundle decides rule's fast path."""
        seen = {rule}
        while True:
            text = self.modules[self.manifest.rules[rule].fast_module]
            code = [
                line
                for line in text.splitlines()
                if line.startswith(('_fast ', 'default _fast ', '_b'))
            ]
            found = _ALIAS.fullmatch('\n'.join(code))
            if found is None or _OWN_SPECIAL.search(text):
                return rule
            read = [
                r
                for r in self.manifest.rules[rule].deps
                if self._package(r) == found.group(1)
            ]
            if len(read) != 1 or read[0] in seen:
                return rule
            rule = read[0]
            seen.add(rule)

    def _package(self, rule: str) -> str:
        entry = self.manifest.rules[rule]
        if entry.package:
            return entry.package
        return entry.path.rsplit('/', 1)[0].replace('/', '.')

    # --- compiling -------------------------------------------------------

    def _interpreter(
        self,
        *names: str,
        ascii_only: bool = False,
        plain: bool = False,
        lower_roles: bool = False,
        extra: Mapping[str, str] | None = None,
    ) -> regopy.Interpreter:
        it = regopy.Interpreter()
        it.strict_built_in_errors = self.strict_builtin_errors
        if self.data_json:
            it.add_data_json(self.data_json)
        for name in names:
            text = self.modules[name]
            if ascii_only and name == CASEFOLD:
                text = ASCII_CASEFOLD
            elif plain and name == COMPARE:
                text = PLAIN_COMPARE
            elif plain and ascii_only and name == ROLES:
                text = LOWER_ROLES if lower_roles else ASCII_ROLES
            it.add_module(name, text)
        for name, text in (extra or {}).items():
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

    def bundle(
        self,
        rule: str,
        ascii_only: bool = False,
        fast: bool = False,
        plain: bool = False,
        lower_roles: bool = False,
    ) -> Any:
        """The compiled bundle deciding rule (built once).

        :param ascii_only: for an input whose strings are all ASCII: the
            bundle where ``py_lower`` is ``lower()``, if the rule allows.
        :param fast: for a tidy input: the fast bundle (entrypoints
            ``_fast_decision`` and ``_fast``), if the rule has one.
        :param plain: with fast and ascii_only, for an input where
            ``str_eq`` is ``==`` (see compare.rego): the fast bundle with
            both substitutions.
        :param lower_roles: with plain, for an input whose roles are all
            lower case: ``roles_list_lower`` is the roles as sent.
        :raises KeyError: rule is not in the manifest.
        :raises PolicyLoadError: the modules do not compile.
        """
        ascii_only = ascii_only and self._ascii_ok[rule]
        if not (fast and self._fast_library[rule] is not None):
            return self._built((rule, False, ascii_only), rule)
        variant = _FULL
        if ascii_only and plain:
            variant = _LOWER if lower_roles else _SIMPLE
        return self._fast_bundle(rule, variant)

    def _fast_bundle(self, rule: str, variant: int) -> Any:
        if variant != _FULL and not self._ascii_ok[rule]:
            variant = _FULL
        # Rules whose fast paths read the same (most share a check
        # string) share its bundles.
        return self._built((self._fast_digest[rule], True, variant), rule)

    def _built(self, key: tuple[str, bool, int], rule: str) -> Any:
        bundle = self._bundles.get(key)
        if bundle is not None:
            return bundle
        with self._build_lock:
            bundle = self._bundles.get(key)
            if bundle is None:
                build = self._build_fast if key[1] else self._build
                bundle = self._bundles[key] = build(rule, key[2])
        return bundle

    def _build(self, rule: str, ascii_only: bool) -> Any:
        entry = self.manifest.rules[rule]
        names = list(self._shared)
        for r in self.manifest.closure(rule):
            dep = self.manifest.rules[r]
            names.append(dep.module)
            if dep.fast_module in self.modules:
                names.append(dep.fast_module)
        entrypoints = [entry.path, _state_path(entry.path)]
        return self._compile(
            names, entrypoints, f'rule {rule!r}', ascii_only=ascii_only
        )

    def _build_fast(self, rule: str, variant: int) -> Any:
        simple = variant != _FULL
        if simple:
            names = self._library_for(rule, FAST_LIBRARY_SIMPLE) or []
        else:
            names = list(self._fast_library[rule] or ())
        # The rule's own fast path goes in under the shared package.
        extra = {'fast path': self._shared_text(rule)}
        for r in self.manifest.closure(rule):
            if r == rule:
                continue
            # What rule reads of r is its allow, which here (a tidy input,
            # no _special) is its _fast: r's fast path, _fast renamed
            # allow, saves the engine a step per reference.
            module = self.manifest.rules[r].fast_module
            extra[module] = _FAST_RULE.sub(_rename, self.modules[module])
        return self._compile(
            names,
            [_decision_path(_SHARED_ALLOW), _fast_path(_SHARED_ALLOW)],
            f'rule {rule!r} (fast path)',
            ascii_only=simple,
            plain=simple,
            lower_roles=variant == _LOWER,
            extra=extra,
        )

    def _shared_text(self, rule: str) -> str:
        """rule's fast path, comments out and under the shared package."""
        text = self.modules[self.manifest.rules[rule].fast_module]
        package = f'package {self._package(rule)}'
        lines = [
            f'package {_SHARED_PACKAGE}' if line == package else line
            for line in text.splitlines()
            if not line.startswith('#')
        ]
        return '\n'.join(lines) + '\n'

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

    def _query(
        self,
        bundle: Any,
        path: str,
        input_doc: Mapping[str, Any],
        key: tuple | None = None,
    ) -> tuple[bool, str]:
        """Query bundle at path; key: input_doc's, to reuse its conversion."""
        with self._pool_lock:
            slot = self._pool.pop() if self._pool else None
        if slot is None:
            it = regopy.Interpreter()
            it.strict_built_in_errors = self.strict_builtin_errors
            slot = (it, {})
        it, made = slot
        try:
            value = made.get(key) if key is not None else None
            if value is None:
                value = regofast.make_input(input_doc)
                if key is not None:
                    if len(made) >= _INPUTS_KEPT:
                        del made[next(iter(made))]
                    made[key] = value
            it.set_input(value)
            return regofast.query(it, bundle, path)
        finally:
            with self._pool_lock:
                self._pool.append(slot)

    def _full_query(
        self, rule: str, path: str, input_doc: Mapping[str, Any]
    ) -> tuple[bool, str]:
        bundle = self.bundle(rule, _all_ascii(input_doc))
        return self._query(bundle, path, input_doc)

    def evaluate(self, rule: str, input_doc: Mapping[str, Any]) -> bool:
        """The rule's ``allow``: true or false, nothing else.

        :raises KeyError: rule is not in the manifest.
        :raises PolicyLoadError: the rule's modules do not compile.
        :raises EvaluationError: the engine reported an error, or
            ``allow`` is undefined or not a boolean.
        """
        path = self.manifest.rules[rule].path
        profile = (
            _fast_profile(input_doc)
            if self._fast_library[rule] is not None
            else None
        )
        if profile is not None:
            # lib.tidy holds (decided here, once, not in Rego per rule):
            # the fast bundle decides, unless some check could still
            # raise ("maybe"), when allow does.
            fast_rule = self._alias[rule]
            entry = _fast_path if self._direct[fast_rule] else _decision_path
            # A fast path reads only these (every value costs regopy
            # time to convert).
            doc = {'credentials': profile[2], 'target': input_doc['target']}
            ok, text = self._query(
                self._fast_bundle(fast_rule, profile[0]),
                entry(_SHARED_ALLOW),
                doc,
                profile[1],
            )
            if ok and text == _TRUE:
                return True
            if ok and text == _FALSE:
                return False
            if not (ok and text == _MAYBE):
                raise EvaluationError(
                    f'rule {rule!r}: the fast path gave no decision'
                )
        ok, text = self._full_query(rule, path, input_doc)
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
        ok, text = self._full_query(rule, path, input_doc)
        return _STATES.get(text) if ok else None
