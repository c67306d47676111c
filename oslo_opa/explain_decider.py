"""Explaining a Decider's decisions (``Decider.explain``), whatever
its driver: the tree is always the embedded engine's (regopy), on the
Decider's own rego_path, data and overlays; OPA's ``?explain=`` is not
used (its trace is of OPA's evaluation, not oslo.policy's tree).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping
from typing import Any

from oslo_opa import inputs
from oslo_opa.explain import explain

_LOCK = threading.Lock()

_ENGINES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _embedded_driver(decider: Any) -> Any:
    """The embedded driver deciding for decider, or one on the same
    rego_path, data and overlays (kept, following reloads)."""
    from oslo_opa.drivers.base import DecisionError
    from oslo_opa.drivers.embedded import EmbeddedDriver

    for driver in (decider.driver, decider.fallback_driver):
        if isinstance(driver, EmbeddedDriver):
            return driver
    if decider.driver is None:
        raise DecisionError(decider.driver_error or 'no policy is loaded')
    with _LOCK:
        found = _ENGINES.get(decider)
        if found is None:
            found = _ENGINES[decider] = EmbeddedDriver(decider.driver.settings)
    return found


def for_decider(
    decider: Any, rule: str, target: Mapping[str, Any], creds: Any
) -> dict[str, Any]:
    """Explain a Decider's decision (``Decider.explain``).

    The tree is always the embedded engine's, on the Decider's
    rego_path, data and overlays.  With another driver (``http``: OPA),
    ``decision`` is that driver's (asked directly: not cached, not a
    decision event; its failure mode where it gives none) and ``notes``
    says where the tree comes from, and whether it decides otherwise.

    :raises KeyError: rule is not in the policy.
    :raises OsloOpaError: the policy cannot be loaded or explained.
    """
    driver = _embedded_driver(decider)
    result = explain(driver._current(), rule, creds, target)
    if driver is decider.driver:
        return result
    # ask: the driver's own answer, not logged as a decision nor cached.
    decision, _, error = decider.ask(
        rule, target, inputs.credentials_dict(creds)
    )
    if decision is None:
        result['notes'].append(
            f'the driver in force gave no decision ({error}): its '
            f'failure mode decides'
        )
        decision = decider.decide(rule, target, creds)
    result['notes'].append(
        'decided by the driver in force; the tree is the embedded '
        "engine's evaluation of the same rego_path, data and overlays"
    )
    if decision != result['decision']:
        result['notes'].append(
            f'the embedded engine decides {result["decision"]}, the '
            f'driver in force {decision}: the tree explains the former'
        )
    result['decision'] = decision
    return result
