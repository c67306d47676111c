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
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import regopy

from oslo_opa import overlay
from oslo_opa.drivers.base import DecisionError, PolicyDirDriver, Settings
from oslo_opa.engine import EvaluationError, RegoPolicy
from oslo_opa.errors import PolicyLoadError
from oslo_opa.policy_files import load_data


class EmbeddedDriver(PolicyDirDriver):
    """Decide with regopy in this process (``driver = embedded``)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._check()

    def layers(self) -> list[str]:
        return [*self.settings.overlay_path, *self.settings.data_path]

    def _overlays(self) -> overlay.Overlays | None:
        paths = self.settings.overlay_path
        return overlay.load(paths) if paths else None

    def load(self) -> RegoPolicy:
        policy = RegoPolicy(
            self.settings.rego_path,
            data=load_data(self.settings.data_path, embedded=True),
            strict_builtin_errors=self.settings.strict_builtin_errors,
            overlays=self._overlays(),
        )
        policy.validate()
        return policy

    def reload_layers(self, policy: RegoPolicy) -> RegoPolicy:
        # New data or overlays: the converted Rego stays compiled.
        new = policy.replace(
            data=load_data(self.settings.data_path, embedded=True),
            overlays=self._overlays(),
        )
        new.validate_overlays()
        return new

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
        policy = self._policy
        if policy is None:
            policy = self._current()
        if rule not in policy.manifest.rules:
            raise DecisionError(f'rule {rule!r} is not in the policy')
        try:
            return policy.evaluate(rule, input_doc)
        except (PolicyLoadError, EvaluationError) as e:
            raise DecisionError(str(e)) from e
        except regopy.RegoError as e:
            # Its text may quote input values (credentials): not logged.
            raise DecisionError(
                f'rule {rule!r}: the engine failed ({type(e).__name__})'
            ) from e
