"""The ``opa`` rule check: ``opa:<rule>`` asks Rego for the decision.

Registered as ``opa`` in the ``oslo.policy.rule_checks`` namespace, so
once oslo.opa is installed, a policy file saying ``"identity:get_project":
"opa:identity:get_project"`` (``oslo-opa convert`` writes such a file)
hands the decision to the driver ``[oslo_opa] driver`` names.  The match
is the rule name, percent-encoded where oslo.policy's tokenizer would
split it (see :mod:`oslo_opa.convert.naming`).

One :class:`~oslo_opa.decider.Decider` (driver, cache) serves each
configuration object, created on first use and reused.
"""

from __future__ import annotations

import inspect
import threading
import weakref
from collections.abc import Mapping, MutableMapping
from typing import Any

from oslo_policy import _checks

from oslo_opa import decider as decider_mod
from oslo_opa.convert import naming

# id(conf) -> (weak reference to conf, its Decider).  ConfigOpts is not
# hashable, so a WeakKeyDictionary cannot hold it.
_deciders: dict[int, tuple[weakref.ref, decider_mod.Decider]] = {}
_lock = threading.Lock()


def decider_for(conf: Any) -> decider_mod.Decider:
    """The Decider for conf, created once."""
    found = _deciders.get(id(conf))
    if found is not None and found[0]() is conf:
        return found[1]
    with _lock:
        found = _deciders.get(id(conf))
        if found is not None and found[0]() is conf:
            return found[1]
        made = decider_mod.from_conf(conf)
        key = id(conf)
        _deciders[key] = (weakref.ref(conf, lambda _r: _forget(key)), made)
        return made


def _forget(key: int) -> None:
    found = _deciders.pop(key, None)
    if found is not None:
        found[1].close()


def reset(conf: Any = None) -> None:
    """Forget the Decider of conf (or all), closing its driver."""
    with _lock:
        keys = [id(conf)] if conf is not None else list(_deciders)
        for key in keys:
            _forget(key)


class OpaCheck(_checks.Check):
    """Decide ``opa:<rule>`` with the configured oslo.opa driver."""

    def __init__(self, kind: str, match: str) -> None:
        super().__init__(kind, match)
        try:
            self.rule = naming.decode_match(match)
        except UnicodeDecodeError:
            self.rule = match

    def __call__(
        self,
        target: Mapping[str, Any],
        creds: MutableMapping[str, Any],
        enforcer: Any,
        current_rule: str | None = None,
    ) -> bool:
        return decider_for(enforcer.conf).decide(self.rule, target, creds)


# oslo.policy calls inspect.getfullargspec(check.__call__) on every
# check it evaluates, to learn whether to pass current_rule.  Building
# that signature from the function costs more (measured: about 9 us)
# than reading a stored one (about 2.6 us), and it never changes.
OpaCheck.__call__.__signature__ = inspect.signature(  # type: ignore[attr-defined]
    OpaCheck.__call__
)
