"""The driver contract: what every decision driver provides."""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from oslo_opa.errors import OsloOpaError


class DecisionError(OsloOpaError):
    """No decision could be had; the message names the rule and cause."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """What a driver is configured with (``[oslo_opa]`` or the API).

    :ivar rego_path: the converted directory (manifest, modules).
    :ivar data_path: JSON/YAML files or directories merged into ``data``.
    :ivar reload_interval: seconds between checks for changed files.
    :ivar strict_builtin_errors: a Rego builtin error is an error.
    :ivar options: driver-specific settings (for example the HTTP
        driver's URL and timeouts).
    """

    rego_path: str | None = None
    data_path: tuple[str, ...] = ()
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
