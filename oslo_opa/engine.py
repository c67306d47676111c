"""In-process Rego evaluation of a converted directory with regopy.

Each rule is decided with small regopy bundles built on first use and
reused (``bundler.py`` says what each holds): ``Interpreter.query()``
would recompile the policy for every decision, and a bundle query costs
time in proportion to all the Rego in the bundle (measured with regopy
1.5.2: 10 us for a one-line bundle, 200 us for one holding keystone's
fast paths).  A *tidy* input (no check can raise on it, see ``lib.tidy``;
decided here in Python, ``input_profile``) goes to the rule's fast
bundle, which answers true, false or "maybe"; so does an input whose
roles make every role check raise (the fast module's ``_rr_decision``);
any other input, and "maybe", to the full bundle, which decides
``allow`` itself.

Only the exact result ``true`` allows: undefined, false, a non-boolean
or an engine error all deny.  regopy's ``Output.expressions()`` is never
called (it aborts the process on an undefined result).

Inputs are projected: a rule whose modules are as the converter wrote
them is sent only the credential and target keys its checks read.  A
hand-edited rule gets the whole input, so Rego that reads more works.

Overlays (``overlay.py``) are asked first, in a query of their own
(``engine_overlays.py``); where they say nothing about the rule or the
rules it reads, the converted rule decides as without them.  Data is
compiled only into the bundles that may read it (overlays, hand-written
Rego), so new data or overlays replace those alone
(:meth:`RegoPolicy.replace`).
"""

from __future__ import annotations

import copy
import json
import os
import threading
from collections.abc import Mapping
from typing import Any

import regopy

from oslo_opa import bundler, inputs, notes, overlay, regofast
from oslo_opa import manifest as manifest_mod
from oslo_opa.engine_batch import BatchedPolicy
from oslo_opa.engine_overlays import EvaluationError, OverlaidPolicy
from oslo_opa.input_profile import (
    FULL,
    LOWER,
    RAISING,
    SIMPLE,
    Profile,
    all_ascii,
    fast_profile,
)
from oslo_opa.overlay_scope import OverlayScope
from oslo_opa.policy_files import read_modules

# Converted inputs each pooled interpreter keeps (a few KiB each).
_INPUTS_KEPT = 256

_TRUE = '{"expressions":[true]}'
_FALSE = '{"expressions":[false]}'
_MAYBE = '{"expressions":["maybe"]}'
_STATES = {'{"expressions":["%s"]}' % s: s for s in 'tfe'}


class RegoPolicy(BatchedPolicy, OverlaidPolicy):
    """A converted directory, ready to decide rules in this process.

    Thread-safe: interpreters hold input state, so each decision borrows
    one from a pool (one per concurrent caller, threads or greenlets);
    bundles are built once under a lock and shared.

    :param directory: the output of ``oslo-opa convert``.
    :param data: a base document made available as ``data``.
    :param strict_builtin_errors: a builtin error is an engine error.
    :param overlays: the overlays in force (see ``overlay.load``), with
        any module in package ``oslo_opa.overlay`` in the directory.
    :param strict: an overlay naming no rule of the policy is an error
        (else a warning, in :attr:`warnings`).
    :raises PolicyLoadError: when the manifest or a module can't be read,
        or an overlay is refused.
    """

    def __init__(
        self,
        directory: str,
        data: Mapping[str, Any] | None = None,
        strict_builtin_errors: bool = True,
        overlays: overlay.Overlays | None = None,
        strict: bool = False,
    ) -> None:
        self.directory = directory
        self.manifest = manifest_mod.load(directory)
        # The batch forms the manifest lists are read when decide_many
        # first needs them.
        self.modules = read_modules(
            directory,
            skip={
                os.path.normpath(e.batch_module)
                for e in self.manifest.rules.values()
                if e.batch_module
            },
        )
        self.data_json = _data_json(data)
        self.strict_builtin_errors = strict_builtin_errors
        self._b = bundler.Bundler(
            directory, self.manifest, self.modules, strict_builtin_errors
        )
        self._projection: dict[str, tuple[list[str], list[str]] | None] = {}
        # Compiled bundles: those of the converted Rego alone, shared
        # with the copies replace() makes, and those holding the data or
        # the overlays, which are not.
        self._bundles: dict[tuple, Any] = {}
        self._data_bundles: dict[tuple, Any] = {}
        self._build_lock = threading.Lock()
        # Interpreters, each with the inputs it has converted lately
        # (fast-path documents repeat: the same caller, the same keys).
        self._pool: list[tuple[regopy.Interpreter, dict]] = []
        self._pool_lock = threading.Lock()
        self.strict = strict
        self._use_overlays(overlays)
        # The batch modules read so far (engine_batch.py).
        self._batch_texts: dict[str, str | None] = {}

    # --- overlays and data -----------------------------------------------

    def _use_overlays(self, overlays: overlay.Overlays | None) -> None:
        self._scope = OverlayScope(
            self.manifest, overlays, self._b.own_overlays, self.strict
        )
        self.overlays = self._scope.overlays
        self.warnings = self._scope.warnings
        self._touched = self._scope.touched
        self._projection = {}
        # Whether each rule's batch form may decide (engine_batch.py).
        self._batch_ok: dict[str, bool] = {}

    def replace(
        self,
        data: Mapping[str, Any] | None = None,
        overlays: overlay.Overlays | None = None,
    ) -> RegoPolicy:
        """This policy with other data and overlays, without compiling
        the converted Rego again: only what reads them is rebuilt.

        :raises PolicyLoadError: an overlay is refused (see
            :meth:`validate_overlays`, which the caller runs).
        """
        new = copy.copy(self)
        new.data_json = _data_json(data)
        new._data_bundles = {}
        new._use_overlays(overlays)
        return new

    # --- compiling -------------------------------------------------------

    def validate(self) -> None:
        """Compile what the manifest does not vouch for: each hand-edited
        rule (with the rules it reads), and the overlays; everything,
        when a library file differs from what the converter wrote or
        hand-written modules sit beside the converted ones.  The rest is
        compiled as decisions need it: its files are as the converter
        wrote and compiled them (their SHA-256 says so).

        :raises PolicyLoadError: naming what does not compile.
        """
        if self._b.trusted:
            for rule in sorted(self._b.edited):
                self.bundle(rule)
        else:
            paths = [e.path for e in self.manifest.rules.values()]
            if paths:
                self._b.compile(
                    self._b.texts(list(self.modules)),
                    paths,
                    'the policy',
                    self.data_json,
                )
        self.validate_overlays()

    def bundle(
        self,
        rule: str,
        ascii_only: bool = False,
        fast: bool = False,
        plain: bool = False,
        lower_roles: bool = False,
    ) -> Any:
        """The compiled bundle deciding rule (built once), overlays aside.

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
        ascii_only = ascii_only and self._b.ascii_ok[rule]
        if not (fast and self._b.fast_library[rule] is not None):
            # Only Rego the converter did not write reads the data.
            if self._b.reads_data[rule]:
                cache = self._data_bundles
            else:
                cache = self._bundles
            return self._cached(
                cache,
                ('full', rule, ascii_only),
                lambda: self._b.build_full(rule, ascii_only, self.data_json),
            )
        variant = FULL
        if ascii_only and plain:
            variant = LOWER if lower_roles else SIMPLE
        return self._fast_bundle(rule, variant)

    def _fast_bundle(self, rule: str, variant: int) -> Any:
        if variant != FULL and not self._b.ascii_ok[rule]:
            variant = FULL
        # Rules whose fast paths read the same (most share a check
        # string) share its bundles.
        digest = self._b.fast_digest[rule]
        return self._cached(
            self._bundles,
            ('fast', digest, variant),
            lambda: self._load_or_build(rule, digest, variant),
        )

    def _load_or_build(self, rule: str, digest: str, variant: int) -> Any:
        """The fast bundle the conversion saved, else compiled now."""
        saved = self._b.load_fast(digest, variant)
        return (
            saved if saved is not None else self._b.build_fast(rule, variant)
        )

    def _cached(self, cache: dict, key: tuple, build: Any) -> Any:
        """cache[key], built once by build()."""
        bundle = cache.get(key)
        if bundle is not None:
            return bundle
        with self._build_lock:
            bundle = cache.get(key)
            if bundle is None:
                bundle = cache[key] = build()
        return bundle

    # --- inputs ------------------------------------------------------------

    def projection(self, rule: str) -> tuple[list[str], list[str]] | None:
        """(credential keys, target keys) rule reads, or None for all (a
        hand-edited rule).  For a rule an overlay may change, with what
        the overlays read: they see the input as the service passed it,
        and cannot tell apart two inputs that differ in nothing else."""
        return self._scope.projection(rule, self._own_keys(rule))

    def _own_keys(self, rule: str) -> tuple[list[str], list[str]] | None:
        """What rule's converted Rego reads; None when it is edited."""
        if rule not in self._projection:
            closure = self.manifest.closure(rule)
            if any(r in self._b.edited for r in closure):
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
        bundle = self.bundle(rule, all_ascii(input_doc))
        return self._query(bundle, path, input_doc)

    def evaluate(self, rule: str, input_doc: Mapping[str, Any]) -> bool:
        """The rule's decision (its ``allow``): true or false, nothing else.

        With overlays that can change rule, input_doc is the whole input
        (see :meth:`projection`): the overlays are asked first, and the
        converted rule decides, on its own part of the input, when they
        say nothing about rule or the rules it reads.

        :raises KeyError: rule is not in the manifest.
        :raises PolicyLoadError: the rule's modules do not compile.
        :raises EvaluationError: the engine reported an error, or
            ``allow`` is undefined or not a boolean.
        """
        if rule in self._touched:
            outcome = self._overlaid(rule, input_doc)
            if outcome is not None:
                notes.last.route = 'overlay'
                return outcome
            keys = self._own_keys(rule)
            if keys is not None:
                input_doc = inputs.project(input_doc, keys)
        path = self.manifest.rules[rule].path
        args = self._b.profile_args.get(rule)
        profile = fast_profile(input_doc, *args) if args is not None else None
        if profile is not None:
            decided = self._fast(rule, profile)
            if decided is not None:
                notes.last.route = 'fast'
                return decided
        notes.last.route = 'full'
        return self._answer(rule, *self._full_query(rule, path, input_doc))

    def _fast(self, rule: str, profile: Profile) -> bool | None:
        """The fast bundle's decision for an input lib.tidy accepts
        (decided here, once, not in Rego per rule), or None when some
        check could still raise ("maybe": allow decides)."""
        fast_rule = self._b.alias[rule]
        variant = profile.variant
        if variant == RAISING:
            # Roles that raise: the fast module's _rr_decision.
            entry, variant = bundler.raising_roles_path, FULL
        elif self._b.direct[fast_rule]:
            entry = bundler.fast_path
        else:
            entry = bundler.decision_path
        # A fast path reads only these (every value costs regopy time to
        # convert).
        doc = {'credentials': profile.credentials, 'target': profile.target}
        if profile.walked:
            doc['walked'] = True
        ok, text = self._query(
            self._fast_bundle(fast_rule, variant),
            entry(bundler.SHARED_ALLOW),
            doc,
            profile.key,
        )
        if ok and (text == _TRUE or text == _FALSE):
            return text == _TRUE
        if not (ok and text == _MAYBE):
            raise EvaluationError(
                f'rule {rule!r}: the fast path gave no decision'
            )
        return None

    def _answer(self, rule: str, ok: bool, text: str) -> bool:
        """The decision in a query's result, or EvaluationError."""
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
        """The rule's three-valued ``state`` ("t", "f", "e") or None: its
        check string's outcome, the overlays on the rules it reads
        applied.  For explaining a decision; :meth:`evaluate` is the
        decision.
        """
        path = bundler.state_path(self.manifest.rules[rule].path)
        if rule in self._touched:
            bundle = self._overlay_bundle(rule)
            ok, text = self._query(bundle, path, input_doc)
        else:
            ok, text = self._full_query(rule, path, input_doc)
        return _STATES.get(text) if ok else None


def _data_json(data: Mapping[str, Any] | None) -> str | None:
    # As UTF-8 text: regopy keeps \u escapes as they are.
    return json.dumps(data, ensure_ascii=False) if data else None
