"""Many targets of one rule in one regopy query (``decide_many``).

A rule asked about many targets for one caller (a list of ports filtered
for a user) is decided, where its fast path would decide each target,
by the batch form conversion wrote beside it (``<rule>.batch.rego``, see
``convert/batchpath.py``): ``_fast_batch`` evaluates ``_fast_t(t)`` for
every item of ``input.targets``, and every check that reads only the
credentials once.  The batch bundle holds the batch modules of the rule
and of the rules it reads, with the library files they call in the
variant the inputs allow (as fast bundles do, ``fast_library``).

Which targets qualify is decided here, as for a single decision
(``input_profile.fast_profile``): the same variant, no roles that raise,
and a first target the fast path decides (the rule's ``_special``, which
reads only credentials, is then false for all).  The others are decided
one by one.  The batch form is used only where the manifest vouches for
every module it compiles: an edited module, or an overlay on the rule or
the rules it reads, and each target is decided on its own.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from oslo_opa import fast_library
from oslo_opa.input_profile import (
    FULL,
    LOWER,
    RAISING,
    SIMPLE,
    Profile,
    fast_profile,
    target_profile,
)

# Fewer targets than this are decided one by one: a batch bundle costs a
# compile, and its query a conversion of every target.
MIN_BATCH = 4


class BatchedPolicy:
    """The part of :class:`~oslo_opa.engine.RegoPolicy` that decides many
    targets of one rule at once."""

    def evaluate_many(
        self, rule: str, docs: Sequence[Mapping[str, Any]]
    ) -> list[bool | Exception]:
        """rule's decision for each input document (one caller, many
        targets), or the exception that deciding it raised.

        :raises KeyError: rule is not in the manifest.
        """
        out: list[bool | Exception | None] = [None] * len(docs)
        base = None
        groups: dict[int, list[tuple[int, Mapping[str, Any]]]] = {}
        if len(docs) >= MIN_BATCH and self._batchable(rule):
            base, groups = self._groups(rule, docs)
        for variant, members in groups.items():
            if base is None or len(members) < MIN_BATCH:
                continue
            # The first target on its own: an error, or "maybe" (the
            # rule's _special, the same for every target), and each is
            # decided on its own below.
            first = base._replace(variant=variant, target=members[0][1])
            try:
                decided = self._fast(rule, first)
            except Exception:  # noqa: BLE001
                decided = None
            if decided is None:
                continue
            answers = self._batch_query(
                rule, variant, base.credentials, [t for _, t in members]
            )
            if answers is None:
                continue
            for (i, _), answer in zip(members, answers, strict=True):
                out[i] = answer
        for i, doc in enumerate(docs):
            if out[i] is None:
                try:
                    out[i] = self.evaluate(rule, doc)
                except Exception as e:  # noqa: BLE001 - returned, not raised
                    out[i] = e
        return out  # type: ignore[return-value]

    def _groups(
        self, rule: str, docs: Sequence[Mapping[str, Any]]
    ) -> tuple[Profile | None, dict[int, list[tuple[int, Any]]]]:
        """What fast_profile makes of the first document's credentials,
        and the documents the batch form may decide, by fast variant:
        those with the same credentials (index, target as sent), whose
        target the fast path takes."""
        groups: dict[int, list[tuple[int, Any]]] = {}
        creds = docs[0]['credentials']
        args = self._b.profile_args[rule]
        base = fast_profile({'credentials': creds, 'target': {}}, *args)
        if base is None or base.variant == RAISING:
            return None, groups
        for i, doc in enumerate(docs):
            if doc['credentials'] != creds:
                continue
            found = target_profile(doc['target'])
            if found is None:
                continue
            variant = base.variant if found[1] else FULL
            groups.setdefault(variant, []).append((i, found[0]))
        return base, groups

    def _batchable(self, rule: str) -> bool:
        """Whether rule's batch form may decide: unedited, with a fast
        path, no overlay on it, and every batch module it compiles as
        the converter wrote it."""
        cached = self._batch_ok.get(rule)
        if cached is not None:
            return cached
        keys = self._own_keys(rule)
        ok = (
            rule not in self._touched
            # A rule that reads no target has one input for all of them.
            and bool(keys and keys[1])
            and self._b.trusted
            and self._b.fast_library.get(rule) is not None
            and self._batch_library(rule, fast_library.FAST_LIBRARY)
            is not None
        )
        self._batch_ok[rule] = ok
        return ok

    def _batch_text(self, name: str) -> str | None:
        """The batch module name's text, read once, or None."""
        if name not in self._batch_texts:
            try:
                path = os.path.join(self.directory, name)
                with open(path, encoding='utf-8') as f:
                    self._batch_texts[name] = f.read()
            except (OSError, UnicodeDecodeError):
                self._batch_texts[name] = None
        return self._batch_texts[name]

    def _batch_modules(self, rule: str) -> list[str] | None:
        """The batch modules rule's batch bundle holds, or None: one is
        missing or not what the manifest says the converter wrote."""
        names = []
        for r in self.manifest.closure(rule):
            entry = self.manifest.rules[r]
            if not entry.batch_module:
                return None
            text = self._batch_text(entry.batch_module)
            if text is None or entry.batch_sha256 != _digest(text):
                return None
            names.append(entry.batch_module)
        return names

    def _batch_library(
        self, rule: str, table: Mapping[str, tuple[str, ...]]
    ) -> list[str] | None:
        """The library files rule's batch modules call (table: for which
        inputs), or None: a batch module is missing or edited, or calls
        a helper the table does not know."""
        names = self._batch_modules(rule)
        if names is None:
            return None
        files: list[str] = []
        for name in names:
            text = self._batch_text(name) or ''
            for call in fast_library.LIB_CALL.findall(text):
                needed = table.get(call)
                if needed is None or not all(
                    f in self.modules for f in needed
                ):
                    return None
                files += [f for f in needed if f not in files]
        return files

    def _batch_bundle(self, rule: str, variant: int) -> Any:
        if variant != FULL and not self._b.ascii_ok[rule]:
            variant = FULL

        def build() -> Any:
            simple = variant in (SIMPLE, LOWER)
            table = (
                fast_library.FAST_LIBRARY_SIMPLE
                if simple
                else fast_library.FAST_LIBRARY
            )
            library = self._batch_library(rule, table) or []
            texts = self._b.texts(
                library,
                ascii_only=variant != FULL,
                plain=simple,
                lower_roles=variant == LOWER,
            )
            for name in self._batch_modules(rule) or ():
                texts[name] = self._batch_text(name)
            return self._b.compile(
                texts, [_entry(self, rule)], f'rule {rule!r} (batch form)'
            )

        return self._cached(self._bundles, ('batch', rule, variant), build)

    def _batch_query(
        self,
        rule: str,
        variant: int,
        credentials: Mapping[str, Any],
        targets: list[Any],
    ) -> list[bool] | None:
        """Each target's decision from one query, or None when the
        answer is not one boolean per target (then each is decided on
        its own)."""
        doc = {'credentials': credentials, 'targets': targets}
        try:
            bundle = self._batch_bundle(rule, variant)
            ok, text = self._query(bundle, _entry(self, rule), doc)
        except Exception:  # noqa: BLE001 - decided one by one instead
            return None
        if not ok:
            return None
        try:
            value = json.loads(text)['expressions'][0]
        except (ValueError, KeyError, IndexError, TypeError):
            return None
        if (
            not isinstance(value, list)
            or len(value) != len(targets)
            or any(type(v) is not bool for v in value)
        ):
            return None
        return value


def _entry(policy: Any, rule: str) -> str:
    """The REST-style path of rule's ``_fast_batch``."""
    package = policy.manifest.rules[rule].path.rsplit('/', 1)[0]
    return f'{package}/_fast_batch'


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode('utf-8')).hexdigest()
