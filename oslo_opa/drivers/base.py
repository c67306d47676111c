"""The driver contract: what every decision driver provides."""

from __future__ import annotations

import abc
import dataclasses
import logging
import os
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from oslo_opa import inputs, metrics
from oslo_opa.errors import OsloOpaError, PolicyLoadError

LOG = logging.getLogger(__name__)

# oslo.policy's deprecation warnings given in this process.
_warned: set[str] = set()
_warned_lock = threading.Lock()


def _warn_deprecations(manifest: Any) -> None:
    """Warn what oslo.policy warns about deprecated rules when it loads
    the converted configuration, as it does (``warnings.warn``, its
    words), once per process: with the delegation file every rule counts
    as overridden, and oslo.policy itself says nothing."""
    texts = getattr(manifest, 'deprecations', ())
    with _warned_lock:
        new = [t for t in texts if t not in _warned]
        _warned.update(new)
    for text in new:
        warnings.warn(text, stacklevel=2)


class DecisionError(OsloOpaError):
    """No decision could be had; the message names the rule and cause."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """What a driver is configured with (``[oslo_opa]`` or the API).

    :ivar rego_path: the converted directory (manifest, modules).
    :ivar data_path: JSON/YAML files or directories merged into ``data``.
    :ivar overlay_path: directories (or files) of overlays: Rego in
        package ``oslo_opa.overlay`` (see :mod:`oslo_opa.overlay`).
    :ivar reload_interval: seconds between checks for changed files.
    :ivar strict_builtin_errors: a Rego builtin error is an error.
    :ivar options: driver-specific settings (for example the HTTP
        driver's URL and timeouts).
    """

    rego_path: str | None = None
    data_path: tuple[str, ...] = ()
    overlay_path: tuple[str, ...] = ()
    reload_interval: float = 5.0
    strict_builtin_errors: bool = True
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)


class Driver(abc.ABC):
    """Decides converted rules; one instance serves a whole process.

    Implementations must be thread-safe.  ``decide`` either returns the
    decision or raises :class:`DecisionError`; callers apply the
    configured failure mode.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @property
    def generation(self) -> int:
        """Changes whenever the policy or data in force changes."""
        return 0

    @abc.abstractmethod
    def input_for(
        self, rule: str, creds: Mapping[str, Any], target: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The input document to decide rule with.

        :raises DecisionError: the rule is unknown or the input cannot
            be represented.
        """

    @abc.abstractmethod
    def decide(self, rule: str, input_doc: Mapping[str, Any]) -> bool:
        """The rule's ``allow`` for input_doc.

        :raises DecisionError: when there is no boolean decision.
        """

    def decide_many(
        self, items: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> list[bool | DecisionError]:
        """Decide several (rule, input) pairs; errors are returned."""
        out: list[bool | DecisionError] = []
        for rule, doc in items:
            try:
                out.append(self.decide(rule, doc))
            except DecisionError as e:
                out.append(e)
        return out

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (connections, caches)."""


def stamp(paths: Sequence[str]) -> tuple:
    """What changes when a file under paths is written, added or gone."""
    seen: list[tuple] = []
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


class PolicyDirDriver(Driver):
    """A driver that follows a converted directory on disk.

    At most every ``reload_interval`` seconds a decision looks at the
    modification times and sizes of the files under :meth:`watched` and
    :meth:`layers` (as oslo.policy does for policy files).  A change is
    loaded whole by :meth:`load` (or, when only the layers changed, by
    :meth:`reload_layers`) before it replaces the policy in force, in one
    assignment; one that fails to load keeps the previous policy and logs
    one error per change.  A directory that cannot be loaded at all is
    retried at the same pace; until then decisions fail.
    """

    #: What :meth:`load` reads, for messages.
    what = 'the policy'

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        if not settings.rego_path and self.needs_rego_path(settings):
            raise PolicyLoadError(
                '[oslo_opa] rego_path is not set: point it at the '
                'directory written by oslo-opa convert'
            )
        self._policy: Any = None
        self._generation = 0
        self._stamp: tuple | None = None
        self._failed_stamp: tuple | None = None
        self._error: str | None = None
        self._next_check = 0.0
        self._reload_lock = threading.Lock()

    def needs_rego_path(self, settings: Settings) -> bool:
        """Whether the policy comes from rego_path (else from elsewhere,
        a bundle server)."""
        return True

    @abc.abstractmethod
    def load(self) -> Any:
        """Load the directory (a RegoPolicy); raise PolicyLoadError."""

    def reload_layers(self, policy: Any) -> Any:
        """policy with the files under :meth:`layers` read again (only
        they changed); by default, :meth:`load`."""
        return self.load()

    def watched(self) -> list[str]:
        """The files and directories whose changes mean a reload."""
        return [self.settings.rego_path]

    def layers(self) -> list[str]:
        """Files and directories read on top of the converted directory
        (overlays, data), which :meth:`reload_layers` reloads alone."""
        return list(self.settings.overlay_path)

    def loaded(self, policy: Any) -> None:  # noqa: B027 - optional hook
        """Called once a new policy is in force."""

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def manifest(self) -> Any:
        policy = self._policy
        return policy.manifest if policy is not None else None

    def _stamps(self) -> tuple[tuple, tuple]:
        return stamp(self.watched()), stamp(self.layers())

    def _check(self) -> None:
        """Reload if files changed; never raises."""
        now = time.monotonic()
        if now < self._next_check:
            return
        if not self._reload_lock.acquire(blocking=self._policy is None):
            return  # another thread is looking; keep deciding
        try:
            self._next_check = now + self.settings.reload_interval
            current = self._stamps()
            if current in (self._stamp, self._failed_stamp):
                return
            try:
                if (
                    self._policy is not None
                    and self._stamp is not None
                    and current[0] == self._stamp[0]
                ):
                    policy = self.reload_layers(self._policy)
                else:
                    policy = self.load()
            except PolicyLoadError as e:
                if self._stamps() != current:
                    # Written while we read it (a conversion replacing
                    # the directory): not a broken policy; look again.
                    self._next_check = 0.0
                    return
                self._failed_stamp = current
                metrics.reload(False, metrics.driver_label(self))
                # Logged in full once, here; each denied decision says
                # why in one short line.
                self._error = (
                    f'{self.what} could not load ({e.first}; logged at load)'
                    if e.first
                    else str(e)
                )
                if self._policy is None:
                    LOG.error('oslo.opa: cannot load %s: %s', self.what, e)
                else:
                    LOG.error(
                        'oslo.opa: reloading %s failed, the previous one '
                        'stays in force: %s',
                        self.what,
                        e,
                    )
                return
            self._install(policy, current)
            if self._generation > 1:
                LOG.info(
                    'oslo.opa: reloaded %s (%d rules)',
                    self.settings.rego_path,
                    len(policy.manifest.rules),
                )
        finally:
            self._reload_lock.release()

    def _install(self, policy: Any, current: tuple) -> None:
        """Put policy in force, in one assignment; the caller holds
        ``_reload_lock`` and passes the stamps policy was loaded at."""
        for warning in getattr(policy, 'warnings', ()):
            LOG.warning('oslo.opa: %s', warning)
        _warn_deprecations(policy.manifest)
        self._policy = policy
        self._stamp = current
        self._failed_stamp = None
        self._error = None
        self._generation += 1
        metrics.policy_loaded(self, policy)
        self.loaded(policy)

    def _current(self) -> Any:
        self._check()
        policy = self._policy
        if policy is None:
            raise DecisionError(self._error or f'{self.what} is not loaded')
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
