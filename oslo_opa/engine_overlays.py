"""How the embedded engine applies overlays: the part of ``RegoPolicy``
(``engine.py``) that asks them.

Overlays are applied in two steps, so that a rule they cannot change,
and an input on which they say nothing, keep the fast path and the
projected input: first one query over the overlay modules and the data
alone says which of the rules it reads an overlay denies or grants on
the input (``overlay_query``; the overlays are sent the keys they read,
or everything when they may read any, and their answer is remembered
for the same keys); a deny or a grant of the rule itself decides at
once; a rule it reads being denied or granted sends the decision to the
rule's full bundle with the overlays compiled in, as OPA evaluates it;
otherwise the converted rule decides as without overlays.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from oslo_opa import overlay, overlay_query
from oslo_opa.errors import OsloOpaError


class EvaluationError(OsloOpaError):
    """The engine gave no boolean decision (the message names the rule)."""


class OverlaidPolicy:
    """Overlay decisions, mixed into ``engine.RegoPolicy``, whose
    bundles, pool and overlay scope these methods use."""

    def validate_overlays(self) -> None:
        """Compile the overlays with the data.

        :raises PolicyLoadError: naming the file and line at fault.
        """
        if self.overlays:
            self._overlay_query(overlay_query.REASONS_MODULE)

    def _overlay_query(self, module: str) -> Any:
        """A bundle of the overlays, the data and a query module."""

        def build() -> Any:
            texts = dict(self.overlays.files)
            reads = [r for *_, r in self.overlays.reads]
            if any(r[:2] == ('oslo_opa', 'lib') for r in reads):
                texts.update(
                    (m, self.modules[m])
                    for m in self.manifest.library
                    if m in self.modules
                )
            texts[overlay_query.FILE] = module
            entry = (
                overlay_query.REASONS
                if module is overlay_query.REASONS_MODULE
                else overlay_query.VERDICTS
            )
            return self._b.compile(
                texts, [entry], 'the overlays', self.data_json
            )

        return self._cached(self._data_bundles, ('overlays', module), build)

    def _verdicts(
        self, rule: str, input_doc: Mapping[str, Any]
    ) -> tuple[frozenset[str], frozenset[str]]:
        """Of the rules rule reads (itself included) and "*", those an
        overlay denies, and those it grants, on input_doc."""
        asked = self._scope.asked(input_doc)
        key, hit = self._scope.recall(rule, asked)
        if hit is not None:
            return hit
        ask = self._scope.asks[rule]
        ok, text = self._query(
            self._overlay_query(self._scope.modules[ask]),
            overlay_query.VERDICTS,
            asked,
        )
        found = overlay_query.parse_verdicts(text, *ask) if ok else None
        if found is None:
            raise EvaluationError(
                f'rule {rule!r}: the overlays gave no verdict'
            )
        self._scope.remember(key, found)
        return found

    def overlay_reasons(
        self, rule: str, input_doc: Mapping[str, Any]
    ) -> dict[str, dict[str, list[str]]]:
        """The overlays' reasons on input_doc for rule and the rules it
        reads: kind ("deny", "grant") -> rule name ("*": every rule) ->
        reasons.  For people; :meth:`evaluate` is the decision.

        :raises EvaluationError: the overlays could not be asked.
        """
        if rule not in self._touched:
            return {'deny': {}, 'grant': {}}
        ok, text = self._query(
            self._overlay_query(overlay_query.REASONS_MODULE),
            overlay_query.REASONS,
            input_doc,
        )
        found = overlay_query.parse_reasons(text) if ok else None
        if found is None:
            raise EvaluationError(
                f'rule {rule!r}: the overlays gave no reasons'
            )
        closure = set(self.manifest.closure(rule)) | {'*'}
        return {
            kind: {r: v for r, v in found[kind].items() if r in closure}
            for kind in ('deny', 'grant')
        }

    def _overlaid(
        self, rule: str, input_doc: Mapping[str, Any]
    ) -> bool | None:
        """rule's decision where an overlay changes it on input_doc, else
        None: the converted rule decides.  The overlays are asked with
        what they read of it."""
        denied, granted = self._verdicts(rule, input_doc)
        if rule in denied or overlay.EVERY_RULE in denied:
            return False
        if rule in granted or overlay.EVERY_RULE in granted:
            return True
        if not denied | granted:
            return None
        # A rule it reads is denied or granted: the Rego decides, with
        # the overlays compiled in, as OPA would.
        bundle = self._overlay_bundle(rule)
        path = self.manifest.rules[rule].path
        return self._answer(rule, *self._query(bundle, path, input_doc))

    def _overlay_bundle(self, rule: str) -> Any:
        """rule's full bundle with the overlays compiled in.  One, exact
        for every input (no ASCII variant): a decision takes it only
        when an overlay denies or grants a rule it reads, which is rare,
        and each bundle compiled costs tens of milliseconds."""
        return self._cached(
            self._data_bundles,
            ('overlay', rule),
            lambda: self._b.build_full(
                rule, False, self.data_json, self.overlays.files
            ),
        )
