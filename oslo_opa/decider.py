"""Decisions for callers: a driver, a decision cache and a failure mode.

This is the public API for code that does not go through oslo.policy::

    from oslo_opa import decider
    d = decider.load('/etc/keystone/opa')
    d.decide('identity:get_project', target, creds)         # -> bool
    d.decide_many([('identity:get_project', t1), ...], creds)  # -> [bool]

and what the ``opa`` rule check uses, built from ``[oslo_opa]``.
Every failure to decide (policy not loadable, unknown rule, evaluation
error, unreachable server) is one log line naming the rule, and a deny,
or with ``failure_mode = fallback`` the rule's oslo.policy check string
from the manifest, evaluated by oslo.policy, or with ``failure_mode =
embedded`` the embedded driver on the same ``rego_path`` (for a remote
driver such as ``http``).  Credentials never reach the logs unmasked.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from oslo_opa import inputs, metrics, notes
from oslo_opa.decision_cache import DecisionCache, input_key
from oslo_opa.drivers import DecisionError, Driver, Settings, load_driver
from oslo_opa.errors import PolicyLoadError
from oslo_opa.failover import FailOver
from oslo_opa.logs.events import Decision

LOG = logging.getLogger(__name__)


class Decider:
    """Decides rules with a driver, a cache and a failure mode.

    :param driver: the driver instance (see :func:`load`).
    :param failure_mode: ``deny``, ``fallback`` or ``embedded``.
    :param cache_size: decisions remembered; 0 turns the cache off.
    :param cache_ttl: seconds a remembered decision stays valid.
    :param driver_error: why there is no driver (driver is None).
    :param rego_path: the converted directory, whose manifest the
        fallback reads when the driver has none.
    :param fallback_driver: with ``failure_mode = embedded``, the driver
        that decides when ``driver`` fails (None: deny).
    :param overlays: overlays are configured; the oslo.policy
        fallback cannot apply them, so with them it denies.
    :param log: where each decision goes as an event in OPA's format
        (:class:`oslo_opa.logs.events.DecisionLog`), or None.
    :param driver_name: the driver's name, for decision events.
    """

    def __init__(
        self,
        driver: Driver | None,
        failure_mode: str = 'deny',
        cache_size: int = 1024,
        cache_ttl: float = 30.0,
        driver_error: str | None = None,
        rego_path: str | None = None,
        fallback_driver: Driver | None = None,
        overlays: bool = False,
        log: Any = None,
        driver_name: str = '',
    ) -> None:
        self.driver = driver
        self.driver_error = driver_error
        self.cache = (
            DecisionCache(cache_size, cache_ttl) if cache_size > 0 else None
        )
        self._cache_generation = None
        # The failure mode, and what it needs (rego_path, the fallback
        # driver, whether overlays are configured).
        self.failover = FailOver(
            failure_mode, rego_path, fallback_driver, overlays
        )
        # Where decisions go as events (None: off); metrics.enabled()
        # says whether they are counted.
        self.log = log
        self.driver_name = driver_name
        # mode = shadow: the opa check's Shadow (see oslo_opa.shadow).
        self.shadow: Any = None

    @property
    def fallback_driver(self) -> Driver | None:
        """With ``failure_mode = embedded``, the driver deciding when
        the configured one fails."""
        return self.failover.fallback_driver

    def _watched(self) -> bool:
        """Whether decisions are recorded (a log, metrics)."""
        return self.log is not None or metrics.enabled()

    def decide(self, rule: str, target: Mapping[str, Any], creds: Any) -> bool:
        """Whether creds may do rule on target (never raises)."""
        # decide_many for one request, without its lists: this is the
        # path every oslo.policy check takes.
        watched = self.log is not None or metrics.enabled()
        if watched:
            started = time.perf_counter_ns()
        creds_dict = inputs.credentials_dict(creds)
        driver = self.driver
        if driver is None:
            return self._failed(rule, target, creds_dict, self.driver_error)
        try:
            doc = driver.input_for(rule, creds_dict, target)
            key = self._cache_key(driver, doc)
            if key is not None:
                hit = self.cache.get(key)
                if hit is not None:
                    if watched:
                        took = time.perf_counter_ns() - started
                        self.observe(rule, doc, hit, 'cache', took)
                    return hit
            outcome = driver.decide(rule, doc)
        except DecisionError as e:
            return self._failed(rule, target, creds_dict, str(e), True)
        if key is not None:
            self.cache.put(key, outcome)
        if watched:
            took = time.perf_counter_ns() - started
            self.observe(rule, doc, outcome, None, took)
        return bool(outcome)

    def ask(
        self, rule: str, target: Mapping[str, Any], creds_dict: dict
    ) -> tuple[bool | None, Any, str]:
        """(Rego's decision or None, the input it read, the error or
        ''), without the cache or the failure mode: what shadow mode
        compares.  Its route is left in :mod:`oslo_opa.notes`."""
        driver = self.driver
        if driver is None:
            return None, None, self.driver_error or 'no driver'
        doc = None
        try:
            doc = driver.input_for(rule, creds_dict, target)
            return bool(driver.decide(rule, doc)), doc, ''
        except DecisionError as e:
            return None, doc, str(e)

    def observe(
        self,
        rule: str,
        doc: Any,
        result: bool,
        route: str | None,
        eval_ns: int | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Record a decision made (decision log, metrics); route None:
        the driver's, from :mod:`oslo_opa.notes`.  eval_ns: the time
        the decision took, in nanoseconds."""
        decision_id = None
        if route is None:
            route, decision_id = notes.take()
        if eval_ns is not None:
            metrics.decision(
                rule, bool(result), self.driver_name, route, eval_ns / 1e9
            )
        log = self.log
        if log is not None:
            if route == 'overlay':
                reasons = getattr(self.driver, 'overlay_reasons', None)
                if reasons is not None:
                    # Asked in the log's thread, not on the request.
                    extra = {**(extra or {}), 'reasons': (reasons, rule, doc)}
            log.record(
                Decision(
                    rule,
                    self._path(rule),
                    doc,
                    bool(result),
                    time.time_ns(),
                    eval_ns,
                    self.driver_name,
                    route,
                    decision_id,
                    extra,
                )
            )

    def revision(self) -> str:
        """The content revision of the conversion in force ('' if none
        is loaded, or it predates revisions)."""
        manifest = self._manifest()
        return manifest.revision if manifest is not None else ''

    def _path(self, rule: str) -> str | None:
        manifest = self._manifest()
        entry = manifest.rules.get(rule) if manifest is not None else None
        return entry.path if entry is not None else None

    def explain(
        self, rule: str, target: Mapping[str, Any], creds: Any
    ) -> dict[str, Any]:
        """Why creds may or may not do rule on target, check by check
        (see :mod:`oslo_opa.explain`; over ``http`` the tree is the
        embedded engine's on the same rego_path).

        :raises KeyError: rule is not in the policy.
        :raises OsloOpaError: the policy cannot be loaded or explained.
        """
        from oslo_opa import explain_decider

        return explain_decider.for_decider(self, rule, target, creds)

    def _cache_key(self, driver: Driver, doc: Mapping[str, Any]) -> Any:
        """The cache key for doc under driver's policy, or None."""
        if self.cache is None:
            return None
        generation = driver.generation
        if self._cache_generation != generation:
            self.cache.clear()
            self._cache_generation = generation
        # The generation is part of the key: an answer from an older
        # policy, stored late, is never served for a newer.
        return (
            generation,
            json.dumps(doc, sort_keys=True, separators=(',', ':')),
        )

    def decide_many(
        self, requests: Sequence[tuple[str, Mapping[str, Any]]], creds: Any
    ) -> list[bool]:
        """Decide several (rule, target) pairs for one caller."""
        creds_dict = inputs.credentials_dict(creds)
        driver = self.driver
        if driver is None:
            return [
                self._failed(rule, target, creds_dict, self.driver_error)
                for rule, target in requests
            ]
        cache = self.cache
        results: list[bool | None] = [None] * len(requests)
        pending: list[tuple[int, str, dict, Any]] = []
        watched = self._watched()
        for i, (rule, target) in enumerate(requests):
            if watched:
                started = time.perf_counter_ns()
            try:
                # May reload the policy: read the generation after it.
                doc = driver.input_for(rule, creds_dict, target)
            except DecisionError as e:
                results[i] = self._failed(
                    rule, target, creds_dict, str(e), True
                )
                continue
            key = self._cache_key(driver, doc)
            if key is not None:
                hit = cache.get(key)
                if hit is not None:
                    results[i] = hit
                    if watched:
                        took = time.perf_counter_ns() - started
                        self.observe(rule, doc, hit, 'cache', took)
                    continue
            pending.append((i, rule, doc, key))
        if pending:
            # The same rule on the same input (a list of resources of a
            # few owners) is decided once.
            same: dict[Any, int] = {}
            unique: list[tuple[str, dict]] = []
            where = []
            for _, rule, doc, key in pending:
                twin = key if key is not None else input_key(rule, doc)
                if twin not in same:
                    same[twin] = len(unique)
                    unique.append((rule, doc))
                where.append(same[twin])
            if watched:
                started = time.perf_counter_ns()
            answers = driver.decide_many(unique)
            if watched:
                # One call decided them all: each its share of it.
                share = (time.perf_counter_ns() - started) // len(unique)
            decided = [answers[n] for n in where]
            for (i, rule, doc, key), outcome in zip(
                pending, decided, strict=True
            ):
                if isinstance(outcome, DecisionError):
                    target = requests[i][1]
                    results[i] = self._failed(
                        rule, target, creds_dict, str(outcome), True
                    )
                    continue
                results[i] = outcome
                if key is not None:
                    cache.put(key, outcome)
                if watched:
                    self.observe(rule, doc, outcome, 'batch', share)
        return [bool(r) for r in results]

    def _failed(
        self,
        rule: str,
        target: Mapping[str, Any],
        creds: dict[str, Any],
        why: str | None,
        driver_failed: bool = False,
    ) -> bool:
        """The failure mode's decision (driver_failed: the driver
        raised, rather than there being none)."""
        started = time.perf_counter_ns()
        # Drivers name the rule too; say it once.
        prefix = f'rule {rule!r}: '
        if why and why.startswith(prefix):
            why = why[len(prefix) :]
        allowed, by = self.failover.decide(
            rule, target, creds, why, self.driver
        )
        if driver_failed:
            metrics.evaluation_error(rule, self.driver_name)
        metrics.fallback(rule, by)
        if self._watched():
            try:
                doc = inputs.document(creds, target, rule)
            except inputs.UnrepresentableInput:
                doc = None
            self.observe(
                rule,
                doc,
                allowed,
                'fallback' if by != 'deny' else 'error',
                time.perf_counter_ns() - started,
                {'fallback': by, 'error': why},
            )
        return allowed

    def _manifest(self) -> Any:
        """The manifest in force: the driver's, or rego_path's own."""
        return self.failover.manifest(self.driver)

    def close(self) -> None:
        if self.shadow is not None:
            self.shadow.close()
        if self.log is not None:
            self.log.close()
        if self.driver is not None:
            self.driver.close()
        if (
            self.fallback_driver is not None
            and self.fallback_driver is not self.driver
        ):
            self.fallback_driver.close()


def load(
    rego_path: str | None = None,
    data_path: Sequence[str] = (),
    driver: str = 'embedded',
    overlay_path: Sequence[str] = (),
    failure_mode: str = 'deny',
    cache_size: int = 1024,
    cache_ttl: float = 30.0,
    reload_interval: float = 5.0,
    strict_builtin_errors: bool = True,
    log: Any = None,
    **options: Any,
) -> Decider:
    """A Decider for a converted directory (or an OPA, with options).

    overlay_path names directories of overlays (Rego in package
    ``oslo_opa.overlay``, see :mod:`oslo_opa.overlay`) applied on top of
    the converted rules; with the http driver, the same overlays OPA
    holds.  A driver that cannot start is logged once; the Decider then denies
    (or falls back) on every decision rather than raising.  options are
    the driver's own settings (``opa_url=...`` for the http driver).
    With ``failure_mode='embedded'`` and another driver, the embedded
    driver is started too, on the same rego_path and data_path.  log
    receives every decision (see :mod:`oslo_opa.logs`).
    """
    settings = Settings(
        rego_path=rego_path,
        data_path=tuple(data_path),
        overlay_path=tuple(overlay_path),
        reload_interval=reload_interval,
        strict_builtin_errors=strict_builtin_errors,
        options=options,
    )
    try:
        drv = load_driver(driver, settings)
        error = None
    except PolicyLoadError as e:
        LOG.error('oslo.opa: %s', e)
        drv, error = None, str(e)
    fallback = None
    if failure_mode == 'embedded':
        if driver == 'embedded':
            fallback = drv
        else:
            try:
                fallback = load_driver('embedded', settings)
            except PolicyLoadError as e:
                LOG.error(
                    'oslo.opa: failure_mode = embedded: the embedded '
                    'driver cannot start (failures will deny): %s',
                    e,
                )
    return Decider(
        drv,
        failure_mode,
        cache_size,
        cache_ttl,
        error,
        rego_path=rego_path,
        fallback_driver=fallback,
        overlays=bool(overlay_path),
        log=log,
        driver_name=driver,
    )


def from_conf(conf: Any) -> Decider:
    """A Decider configured by a ConfigOpts' ``[oslo_opa]`` group."""
    from oslo_opa import logs, metrics, opts, shadow

    opts.register_opts(conf)
    group = conf.oslo_opa
    metrics.configure(group.metrics, group.metrics_listen)
    made = load(
        rego_path=group.rego_path,
        data_path=group.data_path,
        overlay_path=group.overlay_path,
        driver=group.driver,
        failure_mode=group.failure_mode,
        cache_size=group.cache_size,
        cache_ttl=group.cache_ttl,
        reload_interval=group.reload_interval,
        strict_builtin_errors=group.strict_builtin_errors,
        log=logs.from_conf(group, getattr(conf, 'project', None)),
        **{name: group[name] for name in opts.HTTP_OPTION_NAMES},
        **{name: group[name] for name in opts.BUNDLE_OPTION_NAMES},
    )
    if made.log is not None:
        made.log.revision = made.revision
        if group.decision_log_explain:
            made.log.explain = made.explain
    if group.mode == 'shadow':
        made.shadow = shadow.Shadow(made, group.shadow_queue_size)
    return made
