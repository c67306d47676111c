"""The embedded driver: converted Rego evaluated in-process by regopy.

The policy in force is replaced when files under ``rego_path``,
``overlay_path`` or ``data_path`` change: at most every
``reload_interval`` seconds, a decision looks at the files' modification
times and sizes (as oslo.policy does for policy files).  A changed policy
is loaded and compiled whole before it replaces the old one, in one
assignment, so a decision sees the old policy or the new one, never a
mix; when only overlays or data changed, only what reads them is
compiled again.  A policy that fails to load
or compile is not used: the previous one stays in force and one error
naming the file is logged for each change.

With ``bundle_url`` set, the policy comes from a bundle server instead
of ``rego_path``: a background thread downloads, checks and compiles
each new bundle and hands it to :meth:`EmbeddedDriver.activate_bundle`
(see ``bundle_poll.py``); overlays and data files are still followed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import regopy

from oslo_opa import overlay
from oslo_opa.drivers import bundle_poll
from oslo_opa.drivers.base import DecisionError, PolicyDirDriver, Settings
from oslo_opa.engine import EvaluationError, RegoPolicy
from oslo_opa.engine_batch import MIN_BATCH
from oslo_opa.errors import PolicyLoadError
from oslo_opa.policy_files import load_data


class EmbeddedDriver(PolicyDirDriver):
    """Decide with regopy in this process (``driver = embedded``)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        # The converted directory the bundle in force was written out as.
        self._bundle_dir: str | None = None
        self.poller = bundle_poll.from_settings(self, settings.options)
        if self.poller is None:
            self._check()
            return
        self.what = f'the bundle from {self.poller.shown_url}'
        self._error = f'{self.what} is not in force yet'
        self.poller.restore()
        self.poller.start()

    def needs_rego_path(self, settings: Settings) -> bool:
        return not settings.options.get('bundle_url')

    def watched(self) -> list[str]:
        # A bundle's directory never changes: a new bundle is activated.
        return [] if self.poller is not None else [self.settings.rego_path]

    def layers(self) -> list[str]:
        return [*self.settings.overlay_path, *self.settings.data_path]

    def _overlays(self) -> overlay.Overlays | None:
        paths = self.settings.overlay_path
        return overlay.load(paths) if paths else None

    def _data(self, directory: str | None) -> dict[str, Any]:
        # A bundle's own data.json, then data_path (a key in both is an
        # error naming both files).
        paths = list(self.settings.data_path)
        if directory is not None and self.poller is not None:
            own = os.path.join(directory, 'data.json')
            if os.path.exists(own):
                paths.insert(0, own)
        return load_data(paths, embedded=True)

    def _load(self, directory: str | None) -> RegoPolicy:
        if directory is None:
            raise PolicyLoadError(self._error or f'{self.what} is not loaded')
        policy = RegoPolicy(
            directory,
            data=self._data(directory),
            strict_builtin_errors=self.settings.strict_builtin_errors,
            overlays=self._overlays(),
        )
        policy.validate()
        return policy

    def load(self) -> RegoPolicy:
        if self.poller is not None:
            return self._load(self._bundle_dir)
        return self._load(self.settings.rego_path)

    def reload_layers(self, policy: RegoPolicy) -> RegoPolicy:
        # New data or overlays: the converted Rego stays compiled.
        new = policy.replace(
            data=self._data(policy.directory),
            overlays=self._overlays(),
        )
        new.validate_overlays()
        return new

    def activate_bundle(self, directory: str) -> RegoPolicy:
        """Load the converted directory a bundle was written out as and
        put it in force, in one assignment (from the poller's thread).

        :raises PolicyLoadError: it does not load; nothing changed.
        """
        with self._reload_lock:
            stamps = self._stamps()
            policy = self._load(directory)
            self._bundle_dir = directory
            self._install(policy, stamps)
        return policy

    def bundle_status(self) -> dict[str, Any] | None:
        """The bundle in force and the last poll (None without
        bundle_url); what ``<bundle_cache_dir>/status/<pid>.json``
        holds."""
        return self.poller.status() if self.poller is not None else None

    def close(self) -> None:
        if self.poller is not None:
            self.poller.close()

    def overlay_reasons(
        self, rule: str, input_doc: Mapping[str, Any]
    ) -> dict[str, dict[str, list[str]]] | None:
        """The overlays' reasons for rule on input_doc (decision logs),
        or None when they cannot be had."""
        policy = self._policy
        if policy is None:
            return None
        try:
            return policy.overlay_reasons(rule, input_doc)
        except (EvaluationError, regopy.RegoError, KeyError):
            return None

    def decide(self, rule: str, input_doc: Mapping[str, Any]) -> bool:
        if self.poller is not None and not self.poller.running:
            self.poller.start()  # a forked worker's first decision
        policy = self._policy
        if policy is None:
            policy = self._current()
        if rule not in policy.manifest.rules:
            raise DecisionError(f'rule {rule!r} is not in the policy')
        try:
            return policy.evaluate(rule, input_doc)
        except (PolicyLoadError, EvaluationError, regopy.RegoError) as e:
            raise _decision_error(rule, e) from e

    def decide_many(
        self, items: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> list[bool | DecisionError]:
        """Decide several (rule, input) pairs, errors returned: the
        targets of one rule in one query where its batch form can
        (``engine_batch.py``), the others one by one."""
        policy = self._policy
        if policy is None:
            policy = self._current()
        by_rule: dict[str, list[int]] = {}
        for i, (rule, _) in enumerate(items):
            by_rule.setdefault(rule, []).append(i)
        out: list[bool | DecisionError | None] = [None] * len(items)
        for rule, where in by_rule.items():
            if len(where) < MIN_BATCH or rule not in policy.manifest.rules:
                for i in where:
                    try:
                        out[i] = self.decide(*items[i])
                    except DecisionError as e:
                        out[i] = e
                continue
            answers = policy.evaluate_many(rule, [items[i][1] for i in where])
            for i, answer in zip(where, answers, strict=True):
                if isinstance(answer, Exception):
                    if not isinstance(answer, _ENGINE_ERRORS):
                        raise answer
                    answer = _decision_error(rule, answer)
                out[i] = answer
        return out  # type: ignore[return-value]


_ENGINE_ERRORS = (PolicyLoadError, EvaluationError, regopy.RegoError)


def _decision_error(rule: str, e: Exception) -> DecisionError:
    """The DecisionError for an engine's exception."""
    if isinstance(e, regopy.RegoError):
        # Its text may quote input values (credentials): not logged.
        return DecisionError(
            f'rule {rule!r}: the engine failed ({type(e).__name__})'
        )
    return DecisionError(str(e))
