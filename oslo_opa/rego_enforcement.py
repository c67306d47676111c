"""Every decision of every Enforcer from Rego, for a service's own tests.

``oslo_opa.fixture.RegoEnforcement`` (defined here) is added to a
service's test base class::

    self.rego = self.useFixture(fixture.RegoEnforcement())

While it is active, each :class:`oslo_policy.policy.Enforcer` that loads
or sets rules (registered defaults, policy files, ``set_rules()``, the
override fixtures that call it) has its effective rule table converted,
and each rule replaced by a check that asks the converted Rego (the
embedded driver) for the decision.  Scope checks stay oslo.policy's:
``enforce()`` makes them around the rule.  Conversions are cached by the
table's content for the whole process, so a suite converts each
configuration once.

With ``shadow=True`` each decision is also made by the original check
tree, and a difference is recorded (:attr:`differences`) and fails the
test at cleanup.  :attr:`decisions` counts what went through Rego.
"""

from __future__ import annotations

import atexit
import hashlib
import shutil
import tempfile
import threading
from collections.abc import Mapping, MutableMapping
from typing import Any

import fixtures
from oslo_policy import _checks
from oslo_policy import policy as oslo_policy

from oslo_opa import decider as decider_mod
from oslo_opa import opts
from oslo_opa.convert import compile_table, emit
from oslo_opa.convert.rules import RuleTable

# Content key -> Decider over that conversion, for the whole process.
_converted: dict[str, decider_mod.Decider] = {}
_converted_lock = threading.Lock()
_workdir: list[str] = []
# A conversion's directory is named by its content and never rewritten:
# looking for changed files (every file stat-ed, at each decision when
# the interval is 0) is pure cost, a quarter of the fixture's own time
# on cinder's policy tests.
_NEVER_RELOAD = float('inf')


def _directory() -> str:
    if not _workdir:
        path = tempfile.mkdtemp(prefix='oslo-opa-enforcement-')
        atexit.register(shutil.rmtree, path, True)
        _workdir.append(path)
    return _workdir[0]


def _decider_for(
    rules: Mapping[str, Any], default: str | None, opa_url: str | None
) -> Any:
    """A Decider over the conversion of rules, converted once per
    content: in process, or pushed to the OPA at opa_url (each table
    under a package prefix of its own, so tables coexist there)."""
    text = repr(sorted((n, str(c)) for n, c in rules.items()))
    text += repr((default, opa_url))
    key = hashlib.sha256(text.encode('utf-8')).hexdigest()[:32]
    with _converted_lock:
        found = _converted.get(key)
        if found is not None:
            return found
        table = RuleTable(rules=dict(rules), default_rule=default)
        conv = compile_table(table, f'svc_{key[:12]}' if opa_url else 'svc')
        out = f'{_directory()}/{key}'
        emit.write(conv, out, {}, None)
        if opa_url is None:
            made = decider_mod.load(
                out, cache_size=0, reload_interval=_NEVER_RELOAD
            )
        else:
            made = _pushed(out, opa_url)
        _converted[key] = made
        return made


def _pushed(directory: str, opa_url: str) -> Any:
    """directory pushed to the OPA at opa_url, and a Decider asking it."""
    from oslo_opa import opa_push
    from oslo_opa.drivers.transport import Transport

    client = Transport(
        opa_url, connect_timeout=5.0, read_timeout=60.0, max_connections=1
    )
    try:
        opa_push.push(directory, client, validate=False)
    finally:
        client.close()
    return decider_mod.load(
        directory,
        driver='http',
        opa_url=opa_url,
        opa_warm_up=False,
        cache_size=0,
        reload_interval=_NEVER_RELOAD,
    )


class _Originals:
    """An Enforcer seen with its original rules: what oslo.policy would
    have evaluated, for shadow comparisons."""

    def __init__(self, enforcer: Any, rules: Any) -> None:
        self._enforcer = enforcer
        self.rules = rules

    def __getattr__(self, name: str) -> Any:
        return getattr(self._enforcer, name)


class _Delegated(_checks.BaseCheck):
    """A rule whose decision comes from the converted Rego."""

    def __init__(
        self,
        owner: RegoEnforcement,
        decider: Any,
        rule: str,
        original: Any,
        native: Any,
    ) -> None:
        self.owner = owner
        self.decider = decider
        self.rule = rule
        self.original = original
        # The table's original rules (oslo_policy.Rules), shared.
        self.native = native

    def __str__(self) -> str:
        return str(self.original)

    def __call__(
        self,
        target: Mapping[str, Any],
        creds: MutableMapping[str, Any],
        enforcer: Any,
        current_rule: str | None = None,
    ) -> bool:
        allowed = self.decider.decide(self.rule, target, creds)
        self.owner.decisions += 1
        if self.owner.shadow:
            self.owner._compare(self, target, creds, enforcer, allowed)
        return allowed


def _originals(rules: Mapping[str, Any]) -> dict[str, Any]:
    return {n: getattr(c, 'original', c) for n, c in rules.items()}


class RegoEnforcement(fixtures.Fixture):
    """While active, every Enforcer decides its rules with Rego.

    :param shadow: also decide with oslo.policy, and fail the test at
        cleanup on any difference.
    :param opa_url: decide with the OPA there (``http://host:port`` or
        ``unix:///path``), each converted table pushed to it through its
        Policy API; by default, in process (the embedded driver).
    :ivar decisions: decisions made by Rego so far.
    :ivar differences: (rule, Rego's decision, oslo.policy's) where they
        differed, in shadow mode.
    """

    def __init__(
        self, shadow: bool = False, opa_url: str | None = None
    ) -> None:
        super().__init__()
        self.shadow = shadow
        self.opa_url = opa_url
        self.decisions = 0
        self.differences: list[tuple[str, bool, bool]] = []

    def _setUp(self) -> None:
        real_load = oslo_policy.Enforcer.load_rules
        real_set = oslo_policy.Enforcer.set_rules
        owner = self

        def load_rules(enforcer: Any, force_reload: bool = False) -> None:
            enforcer._oslo_opa_loading = True
            try:
                real_load(enforcer, force_reload)
            finally:
                enforcer._oslo_opa_loading = False
            owner._delegate(enforcer)

        def set_rules(
            enforcer: Any,
            rules: Any,
            overwrite: bool = True,
            use_conf: bool = False,
        ) -> None:
            real_set(enforcer, rules, overwrite, use_conf)
            if not getattr(enforcer, '_oslo_opa_loading', False):
                owner._delegate(enforcer)

        self.useFixture(
            fixtures.MonkeyPatch(
                'oslo_policy.policy.Enforcer.load_rules', load_rules
            )
        )
        self.useFixture(
            fixtures.MonkeyPatch(
                'oslo_policy.policy.Enforcer.set_rules', set_rules
            )
        )
        self.addCleanup(self._check_differences)

    def _delegate(self, enforcer: Any) -> None:
        """Replace enforcer's rules by delegated ones, unless they are
        already (load_rules runs on every enforce())."""
        rules = enforcer.rules
        if rules and all(
            type(c) is _Delegated and c.owner is self for c in rules.values()
        ):
            return
        # So that config_fixture.config(group='oslo_opa', ...) works on
        # the service's configuration.
        opts.register_opts(enforcer.conf)
        originals = _originals(rules)
        if not originals:
            return
        decider = _decider_for(originals, rules.default_rule, self.opa_url)
        # What oslo.policy evaluates, for shadow comparisons: built once.
        native = oslo_policy.Rules(originals, rules.default_rule)
        delegated = {
            name: _Delegated(self, decider, name, check, native)
            for name, check in originals.items()
        }
        enforcer.rules = oslo_policy.Rules(delegated, rules.default_rule)

    def _compare(
        self,
        check: _Delegated,
        target: Mapping[str, Any],
        creds: MutableMapping[str, Any],
        enforcer: Any,
        allowed: bool,
    ) -> None:
        try:
            native = bool(
                _checks._check(
                    check.original,
                    dict(target),
                    dict(creds),
                    _Originals(enforcer, check.native),
                    check.rule,
                )
            )
        except Exception:  # noqa: BLE001 - a raise is a deny
            native = False
        if native != allowed:
            self.differences.append((check.rule, allowed, native))

    def _check_differences(self) -> None:
        if self.differences:
            shown = '; '.join(
                f'{rule!r}: Rego {rego}, oslo.policy {native}'
                for rule, rego, native in self.differences[:5]
            )
            raise AssertionError(
                f'oslo.opa: {len(self.differences)} decision(s) differ '
                f'from oslo.policy: {shown}'
            )
