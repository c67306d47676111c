"""The ``opa`` rule check: ``opa:<rule>`` asks Rego for the decision.

Registered as ``opa`` in the ``oslo.policy.rule_checks`` namespace, so
once oslo.opa is installed, a policy file saying ``"identity:get_project":
"opa:identity:get_project"`` (``oslo-opa convert`` writes such a file)
hands the decision to the driver ``[oslo_opa] driver`` names.  The match
is the rule name, percent-encoded where oslo.policy's tokenizer would
split it (see :mod:`oslo_opa.convert.naming`).

One :class:`~oslo_opa.decider.Decider` (driver, cache) serves each
configuration object, created on first use and reused until an
``[oslo_opa]`` option of it changes (see :func:`decider_for`).
"""

from __future__ import annotations

import inspect
import threading
import weakref
from collections.abc import Mapping, MutableMapping
from typing import Any

from oslo_policy import _checks

from oslo_opa import decider as decider_mod
from oslo_opa import opts
from oslo_opa.convert import naming

# id(conf) -> (weak reference to conf, its [oslo_opa] values, its
# Decider).  ConfigOpts is not hashable, so a WeakKeyDictionary cannot
# hold it.
_deciders: dict[int, tuple[weakref.ref, tuple, decider_mod.Decider]] = {}
_lock = threading.Lock()
# A value oslo.config keeps in its cache once read, until any option of
# the object changes (set_override, clear_override, reload, ...), which
# empties the cache.  Its presence says nothing changed.
_CACHED = (opts.GROUP, 'rego_path')


def _values(conf: Any) -> tuple:
    group = conf[opts.GROUP]
    return tuple(group[name] for name in opts.OPTION_NAMES)


def _unchanged(conf: Any) -> bool:
    """Cheaply, whether conf has surely not changed since last read
    (about 0.1 us; reading every option costs about 8 us)."""
    cache = getattr(conf, '_ConfigOpts__cache', None)
    return cache is not None and _CACHED in cache


def decider_for(conf: Any) -> decider_mod.Decider:
    """The Decider for conf, created on first use and reused while its
    ``[oslo_opa]`` options keep their values: a changed option (an
    override, a reloaded config file) gives a new Decider at the next
    decision, and the old one is closed.  Options are registered on conf
    if they are not yet."""
    found = _deciders.get(id(conf))
    if found is not None and found[0]() is conf and _unchanged(conf):
        return found[2]
    with _lock:
        opts.register_opts(conf)
        values = _values(conf)
        found = _deciders.get(id(conf))
        if found is not None and found[0]() is conf:
            if found[1] == values:
                return found[2]
            _forget(id(conf))
        made = decider_mod.from_conf(conf)
        key = id(conf)
        _deciders[key] = (
            weakref.ref(conf, lambda _r: _forget(key)),
            values,
            made,
        )
        return made


def _forget(key: int) -> None:
    found = _deciders.pop(key, None)
    if found is not None:
        found[2].close()


def reset(conf: Any = None) -> None:
    """Forget the Decider of conf (or all), closing its driver.

    Not needed when an option changes (the next decision notices); for
    a change the options cannot show, such as new files at the same
    ``rego_path`` with ``reload_interval`` 0.
    """
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
        decider = decider_for(enforcer.conf)
        if decider.shadow is None:
            return decider.decide(self.rule, target, creds)
        # mode = shadow: oslo.policy decides, Rego is compared aside.
        return decider.shadow.check(
            self.rule, target, creds, enforcer, current_rule
        )


# oslo.policy calls inspect.getfullargspec(check.__call__) on every
# check it evaluates, to learn whether to pass current_rule.  Building
# that signature from the function costs more (measured: about 9 us)
# than reading a stored one (about 2.6 us), and it never changes.
OpaCheck.__call__.__signature__ = inspect.signature(  # type: ignore[attr-defined]
    OpaCheck.__call__
)
