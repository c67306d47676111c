"""What a decision is when the driver cannot make one: the failure mode.

``deny`` (fail closed), ``fallback`` (the rule's converted-from
oslo.policy check string, from the manifest, evaluated by oslo.policy)
or ``embedded`` (the embedded driver on the same rego_path, for a remote
driver).  Every fail-over is one log line naming the rule and why.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from oslo_opa import manifest as manifest_mod
from oslo_opa.drivers import DecisionError
from oslo_opa.errors import PolicyLoadError

LOG = logging.getLogger(__name__)

FAILURE_MODES = ('deny', 'fallback', 'embedded')


class Fallback:
    """A rule's converted-from oslo.policy check string, by oslo.policy."""

    def __init__(self, manifest: Any) -> None:
        from oslo_config import cfg
        from oslo_policy import policy as oslo_policy

        conf = cfg.ConfigOpts()
        conf(args=[], default_config_files=[])
        self._enforcer = oslo_policy.Enforcer(conf, use_conf=False)
        self._enforcer.set_rules(
            oslo_policy.Rules.from_dict(
                {n: e.check_str for n, e in manifest.rules.items()},
                manifest.default_rule,
            ),
            use_conf=False,
        )

    def decide(
        self, rule: str, target: Mapping[str, Any], creds: dict[str, Any]
    ) -> bool:
        try:
            return bool(self._enforcer.enforce(rule, target, dict(creds)))
        except Exception:  # noqa: BLE001 - oslo.policy raising is a deny
            return False


class FailOver:
    """A Decider's failure mode.

    :param mode: ``deny``, ``fallback`` or ``embedded``.
    :param rego_path: the converted directory, whose manifest the
        fallback reads when the driver has none.
    :param fallback_driver: with ``embedded``, the driver that decides
        when the Decider's fails (None: deny).
    :param overlays: overlays are configured; the oslo.policy fallback
        cannot apply them, so with them it denies.
    """

    def __init__(
        self,
        mode: str,
        rego_path: str | None,
        fallback_driver: Any,
        overlays: bool,
    ) -> None:
        if mode not in FAILURE_MODES:
            raise ValueError(f'failure_mode must be one of {FAILURE_MODES}')
        self.mode = mode
        self.rego_path = rego_path
        self.fallback_driver = fallback_driver
        self.overlays = overlays
        self._fallback: tuple[Any, Fallback | None] | None = None
        self._own_manifest: tuple[int, Any] | None = None

    def decide(
        self,
        rule: str,
        target: Mapping[str, Any],
        creds: dict[str, Any],
        why: str | None,
        driver: Any,
    ) -> tuple[bool, str]:
        """The failure mode's decision, and what made it: ``embedded``,
        ``oslo.policy`` or ``deny``."""
        if self.mode == 'embedded':
            second = self.fallback_driver
            if second is not None and second is not driver:
                try:
                    doc = second.input_for(rule, creds, target)
                    allowed = second.decide(rule, doc)
                except DecisionError as e:
                    why = f'{why}; the embedded driver failed too: {e}'
                else:
                    LOG.warning(
                        'oslo.opa: rule %r: %s; decided by the embedded '
                        'driver instead',
                        rule,
                        why,
                    )
                    return allowed, 'embedded'
        if self.mode == 'fallback' and self.overlays:
            # A check string alone would ignore a deny: fail closed.
            why = f'{why}; overlays are configured, which the fallback '
            why += 'cannot apply'
        elif self.mode == 'fallback':
            fallback = self._fallback_for(driver)
            if fallback is not None and self._knows(driver, rule):
                LOG.warning(
                    'oslo.opa: rule %r: %s; deciding with its oslo.policy '
                    'check string instead',
                    rule,
                    why,
                )
                return fallback.decide(rule, target, creds), 'oslo.policy'
        LOG.warning('oslo.opa: rule %r: %s; denying', rule, why)
        return False, 'deny'

    def manifest(self, driver: Any) -> Any:
        """The manifest in force: driver's, or rego_path's own."""
        manifest = getattr(driver, 'manifest', None)
        if manifest is not None or not self.rego_path:
            return manifest
        # The driver has no policy (it did not start, or its data does
        # not load): the fallback still has the manifest's check strings.
        path = os.path.join(self.rego_path, manifest_mod.MANIFEST)
        try:
            stamp = os.stat(path).st_mtime_ns
        except OSError:
            return None
        if self._own_manifest is None or self._own_manifest[0] != stamp:
            try:
                self._own_manifest = (stamp, manifest_mod.load(self.rego_path))
            except PolicyLoadError as e:
                LOG.error('oslo.opa: %s', e)
                self._own_manifest = (stamp, None)
        return self._own_manifest[1]

    def _knows(self, driver: Any, rule: str) -> bool:
        manifest = self.manifest(driver)
        return manifest is not None and rule in manifest.rules

    def _fallback_for(self, driver: Any) -> Fallback | None:
        manifest = self.manifest(driver)
        if manifest is None:
            return None
        if self._fallback is None or self._fallback[0] is not manifest:
            try:
                self._fallback = (manifest, Fallback(manifest))
            except Exception as e:  # noqa: BLE001 - keep denying instead
                LOG.error('oslo.opa: cannot build the fallback: %s', e)
                self._fallback = (manifest, None)
        return self._fallback[1]
