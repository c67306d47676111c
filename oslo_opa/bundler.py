"""The regopy bundles a converted directory is decided with.

regopy's query time grows with all the Rego compiled into a bundle, so
the embedded engine (``engine.py``) decides each rule with small bundles
that hold only what the rule needs; this module says what goes into
each and compiles it:

* the fast bundle, for a *tidy* input (no check can raise on it, see
  ``lib.tidy``): the rule's ``<rule>.fast.rego`` and, renamed ``allow``,
  the ``_fast`` of each rule it reads, plus only the library files those
  call (``fast_library``).  Rules whose fast paths read the same share
  one.  It answers true, false, or "maybe" when some check could still
  raise (``_fast_decision``), and the same for an input whose roles
  make every role check raise (``_rr_decision``);
* the full bundle: the rule's modules, the modules they read, the helper
  library and any extra hand-written modules, deciding ``allow``;
* with overlays, the same with the overlay modules compiled in.

Most inputs are ASCII, and Python's ``str.lower()`` of an ASCII string is
Rego's ``lower()``, so bundles come in variants, each exact on the inputs
it is used for (see ``input_profile``; the library variants are in
``fast_library``):

* full bundle: as written, or with ``py_lower`` (``casefold.rego``:
  tables and a regex per call) plain ``lower()`` when every string is
  ASCII;
* fast bundle: as written; with ``lower()`` when every string that may
  be lowered (roles, target values) is ASCII (``ASCII``); when besides
  no credential is a list, with ``str_eq`` plain ``==`` too
  (``PLAIN_COMPARE``: the engine sends ints, booleans and None as their
  ``str()``); and then, when every role is lower case already, with the
  roles used as sent (``LOWER_ROLES``).

A rule qualifies for the ASCII variants when its modules are unedited
and lower-case no text of their own (the manifest's ``ascii_lowering``).
A module is edited when it differs from what the converter wrote (its
SHA-256 is not the manifest's), or when a hand-written module adds to
its package.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
from collections.abc import Mapping
from typing import Any

import regopy

from oslo_opa import fast_library, rego_errors
from oslo_opa import manifest as manifest_mod
from oslo_opa.errors import PolicyLoadError
from oslo_opa.fast_library import (
    CASEFOLD,
    FAST_LIBRARY,
    FAST_LIBRARY_SIMPLE,
    LIB_CALL,
)
from oslo_opa.input_profile import ASCII, FULL, LOWER, SIMPLE

# The package a fast bundle holds its rule's fast path under, so that
# rules whose fast paths read the same share the bundle.
SHARED_PACKAGE = 'oslo_opa.shared_fast_path'
SHARED_ALLOW = SHARED_PACKAGE.replace('.', '/') + '/allow'
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


# A package name from the manifest, before it is written into Rego.
_PACKAGE = re.compile(r'[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*')
# A module the operator put in the converted directory that is an overlay;
# the package line of any module.
_OVERLAY_MODULE = re.compile(
    r'^[ \t]*package[ \t]+oslo_opa\.overlay[ \t]*$', re.M
)
_PACKAGE_LINE = re.compile(r'^[ \t]*package[ \t]+([A-Za-z0-9_.]+)', re.M)


def fast_path(allow_path: str) -> str:
    return allow_path.rsplit('/', 1)[0] + '/_fast'


def decision_path(allow_path: str) -> str:
    return allow_path.rsplit('/', 1)[0] + '/_fast_decision'


def raising_roles_path(allow_path: str) -> str:
    return allow_path.rsplit('/', 1)[0] + '/_rr_decision'


def state_path(allow_path: str) -> str:
    return allow_path.rsplit('/', 1)[0] + '/state'


# The fast bundle variants, each exact on the inputs it is used for.
VARIANTS = (FULL, SIMPLE, LOWER, ASCII)


def regopy_version() -> str:
    """The regopy in use: saved bundles are only read by the one that
    wrote them."""
    return importlib.metadata.version('regopy')


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode('utf-8')).hexdigest()


class Bundler:
    """What each bundle of a converted directory holds; compiling it.

    :param directory: the converted directory (for messages).
    :param manifest: its manifest.
    :param modules: its modules, relative path -> text.
    :param strict_builtin_errors: a builtin error is an engine error.
    :raises PolicyLoadError: a module the manifest lists is missing.
    """

    def __init__(
        self,
        directory: str,
        manifest: manifest_mod.Manifest,
        modules: dict[str, str],
        strict_builtin_errors: bool = True,
    ) -> None:
        self.directory = directory
        self.manifest = manifest
        self.modules = modules
        self.strict_builtin_errors = strict_builtin_errors
        owned = {e.module for e in self.manifest.rules.values()}
        owned |= {
            m
            for e in self.manifest.rules.values()
            for m in (e.fast_module, e.batch_module)
            if m in self.modules
        }
        for entry in self.manifest.rules.values():
            if entry.module not in self.modules:
                raise PolicyLoadError(
                    f'{os.path.join(self.directory, entry.module)}: missing; '
                    f'the manifest lists it for rule {entry.name!r}'
                )
        # An overlay put in the directory is an overlay (convert would
        # replace it: overlay_path is its place); other hand-written
        # modules and the library go into every full bundle.
        extra = [m for m in self.modules if m not in owned]
        self.own_overlays = {
            os.path.join(self.directory, m): self.modules[m]
            for m in extra
            if _OVERLAY_MODULE.search(self.modules[m])
        }
        self.shared = [
            m
            for m in extra
            if os.path.join(self.directory, m) not in self.own_overlays
        ]
        self.edited = {
            e.name for e in self.manifest.rules.values() if self._is_edited(e)
        }
        # A hand-written module adding to a converted rule's package
        # edits that rule as much as changing its file does.
        packages = {self.package(r): r for r in self.manifest.rules}
        for m in self.shared:
            if m in self.manifest.library:
                continue
            for found in _PACKAGE_LINE.finditer(self.modules[m]):
                if found.group(1) in packages:
                    self.edited.add(packages[found.group(1)])
        # Whether the manifest vouches for every file but the edited
        # rules': the library as written (its digests recorded), and no
        # module of the operator's among them.
        recorded = self.manifest.library_sha256
        self.trusted = bool(recorded) and all(
            m in self.manifest.library
            and recorded.get(m) == _digest(self.modules[m])
            for m in self.shared
        )
        # Whether the fast paths may be sent credentials that are lists:
        # their comparisons walk them if the converter and the library
        # as written say so.
        self.fast_lists = self.manifest.fast_lists and self.trusted
        self.fast_raising_roles = (
            self.manifest.fast_raising_roles and self.trusted
        )
        # The credentials each rule's fast path reads only through dotted
        # paths, which it walks whatever they hold.
        self.dotted = {
            name: self._dotted(name) if self.trusted else frozenset()
            for name in self.manifest.rules
        }
        # Their paths, split, for the rules that have any.
        self.dotted_paths = {
            name: tuple(
                dict.fromkeys(
                    tuple(p.split('.'))
                    for r in self.manifest.closure(name)
                    for p in self.manifest.rules[r].dotted_paths
                )
            )
            for name, keys in self.dotted.items()
            if keys
        }
        # Whether full bundles need the data: only Rego the converter did
        # not write reads it.
        self.reads_data = {
            name: any(r in self.edited for r in self.manifest.closure(name))
            or any(m not in self.manifest.library for m in self.shared)
            for name in self.manifest.rules
        }
        self.ascii_ok = {
            name: CASEFOLD in self.modules
            and not any(r in self.edited for r in self.manifest.closure(name))
            and all(
                self.manifest.rules[r].ascii_lowering
                for r in self.manifest.closure(name)
            )
            for name in self.manifest.rules
        }
        # The library files each rule's fast path needs, if it has one,
        # and what tells its fast bundle from another rule's.
        self.fast_library: dict[str, list[str] | None] = {}
        self.fast_digest: dict[str, str] = {}
        clash = any(
            self.package(r) == SHARED_PACKAGE for r in self.manifest.rules
        )
        for name in self.manifest.rules:
            library = None if clash else self.library_for(name)
            self.fast_library[name] = library
            if library is not None:
                others = [r for r in self.manifest.closure(name) if r != name]
                what = [self.shared_text(name), *library, '', *sorted(others)]
                self.fast_digest[name] = hashlib.sha256(
                    '\0'.join(what).encode('utf-8')
                ).hexdigest()
        # Rules whose fast path can never say "maybe": none of the rules
        # in their closure has a _special of its own (only references to
        # the others'), so _fast is the decision.
        self.direct = {
            name: self.fast_library[name] is not None
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
        self.alias = {
            name: self.aliased(name)
            for name in self.manifest.rules
            if self.fast_library[name] is not None
        }
        # input_profile.fast_profile's arguments after the input, per rule
        # with a fast path: looked up once per decision.
        self.profile_args = {
            name: (
                self.fast_lists,
                self.fast_raising_roles,
                self.dotted[name],
                self.dotted_paths.get(name, ()),
            )
            for name in self.alias
        }

    def _dotted(self, rule: str) -> frozenset[str]:
        entries = [self.manifest.rules[r] for r in self.manifest.closure(rule)]
        dotted = {k for e in entries for k in e.dotted_credentials}
        flat = {
            k
            for e in entries
            for k in e.credentials
            if k not in e.dotted_credentials
        }
        return frozenset(dotted - flat)

    def _is_edited(self, entry: manifest_mod.RuleEntry) -> bool:
        """Whether entry's files differ from what the converter wrote."""

        def changed(name: str | None, digest: str | None) -> bool:
            text = self.modules.get(name) if name else None
            return text is None or digest is None or _digest(text) != digest

        if changed(entry.module, entry.sha256):
            return True
        # A manifest from before the fast path had its own file has none.
        return entry.fast_module is not None and changed(
            entry.fast_module, entry.fast_sha256
        )

    def library_for(
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
                r in self.edited
                or text is None
                or not _PACKAGE.fullmatch(self.package(r))
            ):
                return None
            for call in LIB_CALL.findall(text):
                needed = table.get(call)
                if needed is None or any(
                    f not in self.modules for f in needed
                ):
                    return None
                files += [f for f in needed if f not in files]
        return files

    def aliased(self, rule: str) -> str:
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
                if self.package(r) == found.group(1)
            ]
            if len(read) != 1 or read[0] in seen:
                return rule
            rule = read[0]
            seen.add(rule)

    def package(self, rule: str) -> str:
        entry = self.manifest.rules[rule]
        if entry.package:
            return entry.package
        return entry.path.rsplit('/', 1)[0].replace('/', '.')

    def texts(
        self,
        names: list[str],
        ascii_only: bool = False,
        plain: bool = False,
        lower_roles: bool = False,
    ) -> dict[str, str]:
        """The named modules' texts, with the library variants asked."""
        return {
            name: fast_library.variant(
                name, self.modules[name], ascii_only, plain, lower_roles
            )
            for name in names
        }

    def compile(
        self,
        texts: Mapping[str, str],
        entrypoints: list[str],
        what: str,
        data_json: str | None = None,
    ) -> Any:
        """A bundle of texts (name -> module) and data (JSON text), or
        PolicyLoadError naming what and each error's file and line."""
        it = regopy.Interpreter()
        # Errors are reported here, with rows and columns; not on stderr.
        it.log_level = regopy.LogLevel.NONE
        it.strict_built_in_errors = self.strict_builtin_errors
        try:
            if data_json:
                it.add_data_json(data_json)
            for name, text in texts.items():
                it.add_module(name, text)
            bundle = it.build(None, entrypoints)
        except regopy.RegoError as e:
            raise self._compile_error(what, str(e), texts) from e
        if not bundle.ok():
            raise self._compile_error(what, str(bundle.node()), texts)
        return bundle

    def _compile_error(
        self, what: str, raw: str, texts: Mapping[str, str]
    ) -> PolicyLoadError:
        return PolicyLoadError(
            f'{self.directory}: {what} does not compile: '
            f'{rego_errors.summary(raw, texts)}',
            first=rego_errors.first(raw, texts),
        )

    def full_names(self, rule: str) -> list[str]:
        """The modules of rule's full bundle: the library, hand-written
        modules, and the modules of rule and of the rules it reads."""
        names = list(self.shared)
        for r in self.manifest.closure(rule):
            dep = self.manifest.rules[r]
            names.append(dep.module)
            if dep.fast_module in self.modules:
                names.append(dep.fast_module)
        return names

    def build_full(
        self,
        rule: str,
        ascii_only: bool,
        data_json: str | None = None,
        overlays: Mapping[str, str] | None = None,
    ) -> Any:
        """rule's full bundle (entrypoints allow and state), with the
        data only if its Rego may read it, and the overlay modules."""
        path = self.manifest.rules[rule].path
        texts = self.texts(self.full_names(rule), ascii_only=ascii_only)
        texts.update(overlays or {})
        if not (overlays or self.reads_data[rule]):
            data_json = None
        what = f'rule {rule!r}' + (' with the overlays' if overlays else '')
        return self.compile(texts, [path, state_path(path)], what, data_json)

    def build_fast(self, rule: str, variant: int) -> Any:
        simple = variant in (SIMPLE, LOWER)
        if simple:
            names = self.library_for(rule, FAST_LIBRARY_SIMPLE) or []
        else:
            names = list(self.fast_library[rule] or ())
        texts = self.texts(
            names,
            ascii_only=variant != FULL,
            plain=simple,
            lower_roles=variant == LOWER,
        )
        # The rule's own fast path goes in under the shared package.
        texts['fast path'] = self.shared_text(rule)
        for r in self.manifest.closure(rule):
            if r == rule:
                continue
            # What rule reads of r is its allow, which here (a tidy input,
            # no _special, no overlay on r) is its _fast: r's fast path,
            # _fast renamed allow, saves the engine a step per reference.
            module = self.manifest.rules[r].fast_module
            texts[module] = _FAST_RULE.sub(_rename, self.modules[module])
        entrypoints = [decision_path(SHARED_ALLOW), fast_path(SHARED_ALLOW)]
        if self.manifest.fast_raising_roles:
            entrypoints.append(raising_roles_path(SHARED_ALLOW))
        return self.compile(texts, entrypoints, f'rule {rule!r} (fast path)')

    def load_fast(self, digest: str, variant: int) -> Any:
        """The fast bundle the conversion compiled and saved for digest
        and variant (see convert/prebuilt.py), or None: none saved, saved
        by another regopy, compiled for other builtin errors, or a file
        that is not what the manifest says it is (then it is compiled
        from the modules, which the manifest vouches for)."""
        saved = self.manifest.prebuilt
        entry = (saved.get('fast') or {}).get(f'{digest}/{variant}')
        if (
            entry is None
            or saved.get('regopy') != regopy_version()
            or not self.strict_builtin_errors
        ):
            return None
        path = os.path.join(self.directory, str(entry.get('file')))
        try:
            with open(path, 'rb') as f:
                data = f.read()
        except (OSError, ValueError):
            return None
        if hashlib.sha256(data).hexdigest() != entry.get('sha256'):
            return None
        try:
            return regopy.Interpreter().load_bundle(
                path, regopy.BundleFormat.Binary
            )
        except regopy.RegoError:
            return None

    def shared_text(self, rule: str) -> str:
        """rule's fast path, comments out and under the shared package."""
        text = self.modules[self.manifest.rules[rule].fast_module]
        package = f'package {self.package(rule)}'
        lines = [
            f'package {SHARED_PACKAGE}' if line == package else line
            for line in text.splitlines()
            if not line.startswith('#')
        ]
        return '\n'.join(lines) + '\n'
