"""The embedded driver: converted Rego evaluated in-process by regopy.

The policy in force is replaced when files under ``rego_path`` or
``data_path`` change: at most every ``reload_interval`` seconds, a
decision looks at the files' modification times and sizes (as oslo.policy
does for policy files).  A changed policy is loaded and compiled whole
before it replaces the old one, in one assignment, so a decision sees
the old policy or the new one, never a mix.  A policy that fails to load
or compile is not used: the previous one stays in force and one error
naming the file is logged for each change.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

import regopy

from oslo_opa import inputs
from oslo_opa.drivers.base import DecisionError, Driver, Settings
from oslo_opa.engine import EvaluationError, RegoPolicy, load_data
from oslo_opa.errors import PolicyLoadError
from oslo_opa.manifest import Manifest

LOG = logging.getLogger(__name__)


def _stamp(paths: list[str]) -> tuple:
    """What changes when a file under paths is written, added or gone."""
    seen = []
    for top in paths:
        if not os.path.exists(top):
            seen.append((top, None))
            continue
        if os.path.isfile(top):
            st = os.stat(top)
            seen.append((top, st.st_mtime_ns, st.st_size))
            continue
        for root, dirs, files in os.walk(top):
            dirs.sort()
            for name in sorted(files):
                path = os.path.join(root, name)
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                seen.append((path, st.st_mtime_ns, st.st_size))
    return tuple(seen)


class EmbeddedDriver(Driver):
    """Decide with regopy in this process (``driver = embedded``)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        if not settings.rego_path:
            raise PolicyLoadError(
                '[oslo_opa] rego_path is not set: point it at the '
                'directory written by oslo-opa convert'
            )
        self._paths = [settings.rego_path, *settings.data_path]
        self._policy: RegoPolicy | None = None
        self._generation = 0
        self._stamp: tuple | None = None
        self._failed_stamp: tuple | None = None
        self._error: str | None = None
        self._next_check = 0.0
        self._reload_lock = threading.Lock()
        # A policy that cannot load now is retried every reload_interval;
        # until then decisions fail (deny, or the fallback).
        self._check()

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def manifest(self) -> Manifest | None:
        policy = self._policy
        return policy.manifest if policy is not None else None

    def _check(self) -> None:
        """Reload if files changed; never raises."""
        now = time.monotonic()
        if now < self._next_check:
            return
        if not self._reload_lock.acquire(blocking=self._policy is None):
            return  # another thread is looking; keep deciding
        try:
            self._next_check = now + self.settings.reload_interval
            stamp = _stamp(self._paths)
            if stamp == self._stamp or stamp == self._failed_stamp:
                return
            try:
                policy = RegoPolicy(
                    self.settings.rego_path,
                    data=load_data(self.settings.data_path),
                    strict_builtin_errors=self.settings.strict_builtin_errors,
                )
                policy.validate()
            except PolicyLoadError as e:
                self._failed_stamp = stamp
                self._error = str(e)
                if self._policy is None:
                    LOG.error('oslo.opa: cannot load the policy: %s', e)
                else:
                    LOG.error(
                        'oslo.opa: policy reload failed, the previous '
                        'policy stays in force: %s',
                        e,
                    )
                return
            self._policy = policy
            self._stamp = stamp
            self._failed_stamp = None
            self._error = None
            self._generation += 1
            if self._generation > 1:
                LOG.info(
                    'oslo.opa: reloaded %s (%d rules)',
                    self.settings.rego_path,
                    len(policy.manifest.rules),
                )
        finally:
            self._reload_lock.release()

    def _current(self) -> RegoPolicy:
        self._check()
        policy = self._policy
        if policy is None:
            raise DecisionError(self._error or 'no policy loaded')
        return policy

    def input_for(
        self, rule: str, creds: Mapping[str, Any], target: Mapping[str, Any]
    ) -> dict[str, Any]:
        policy = self._current()
        try:
            return policy.input_for(rule, creds, target)
        except KeyError:
            raise DecisionError(
                f'rule {rule!r} is not in '
                f'{os.path.join(policy.directory, "manifest.json")}'
            ) from None
        except inputs.UnrepresentableInput as e:
            raise DecisionError(f'rule {rule!r}: {e}') from e

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
