"""Prometheus metrics of decisions, drivers and reloads (prometheus_client).

``[oslo_opa] metrics``: ``off`` (every call below returns at once),
``registry`` (prometheus_client's default ``REGISTRY``, or in its
multiprocess mode the files under ``PROMETHEUS_MULTIPROC_DIR``, for the
service's exporter) or ``serve`` (also its HTTP exporter on
``metrics_listen``, once per process).  Names: doc/operators.rst.  Labels
never carry input values; recording never raises into a decision.
prometheus_client is imported here only, once metrics are on: it picks
its multiprocess mode at import, after the service set it up.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import threading
from typing import Any

LOG = logging.getLogger(__name__)

MODES = ('off', 'registry', 'serve')
PATHS = (
    'fast',
    'full',
    'cache',
    'overlay',
    'batch',
    'fallback',
    'error',
    'remote',
)
# Embedded decisions take tens of microseconds, remote ones a millisecond
# or more; a timeout is 100 ms and up.
BUCKETS = (
    1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01,
    0.025, 0.05, 0.1,
)  # fmt: skip
# Distinct rule label values kept; beyond (a caller asking made-up rule
# names), they are counted under OTHER so the series stay bounded.
MAX_RULES = 5000
OTHER = '(other)'

_on = False
_m: _Metrics | None = None
_lock = threading.Lock()
_served_pid: int | None = None
_server: Any = None
_complained = False


# attribute: kind, name after oslo_opa_ (counters get _total), labels, help
# fmt: off
_SPECS = {
    'decisions': ('counter', 'decisions', 'rule result driver path',
                  'Decisions by rule, result (allow, deny), driver, path'),
    'duration': ('histogram', 'decision_duration_seconds', 'driver path',
                 'Time to decide, by driver and path'),
    'mismatches': ('counter', 'shadow_mismatches', 'rule',
                   'Shadow decisions that differed from the enforced one'),
    'dropped': ('counter', 'shadow_dropped', 'rule',
                'Shadow decisions not made'),
    'fallbacks': ('counter', 'fallbacks', 'rule to',
                  'Decisions the failure mode made, to whom'),
    'errors': ('counter', 'evaluation_errors', 'rule driver',
               'Decisions the driver could not make'),
    'breaker': ('gauge', 'circuit_breaker_open', 'driver',
                '1 while the circuit breaker is open'),
    'opens': ('counter', 'circuit_breaker_opens', 'driver',
              'Times the circuit breaker opened'),
    'reloads': ('counter', 'reloads', 'driver result',
                'Policy loads and reloads by result (ok, failed)'),
    # An info metric by hand: Info has no multiprocess mode.
    'revision': ('gauge', 'policy_revision_info', 'driver revision',
                 'The policy revision in force (1; 0 once replaced)'),
    'log_dropped': ('counter', 'decision_log_dropped', 'sink',
                    'Decision log entries dropped, by sink'),
}
# fmt: on
# Where the first label is a rule name (bounded by MAX_RULES).
_BY_RULE = frozenset(('mismatches', 'dropped', 'fallbacks', 'errors'))


class _Metrics:
    """The metric objects, and their label children by label values."""

    def __init__(self, pc: Any) -> None:
        for attr, (kind, name, labels, doc) in _SPECS.items():
            name, labels = f'oslo_opa_{name}', labels.split()
            if kind == 'counter':
                metric = pc.Counter(name, doc, labels)
            elif kind == 'histogram':
                metric = pc.Histogram(name, doc, labels, buckets=BUCKETS)
            else:
                # livemax: any living worker's 1 wins; a dead worker's
                # file goes with prometheus_client's mark_process_dead.
                metric = pc.Gauge(
                    name, doc, labels, multiprocess_mode='livemax'
                )
            setattr(self, attr, metric)
        # labels() costs microseconds: look each child up once.
        self.children: dict[tuple, Any] = {}
        self.rules: set[str] = set()
        self.revisions: dict[str, str] = {}

    def child(self, metric: Any, *values: Any) -> Any:
        key = (id(metric), *values)
        found = self.children.get(key)
        if found is None:
            found = self.children[key] = metric.labels(*values)
        return found

    def rule(self, rule: str) -> str:
        if rule not in self.rules:
            if len(self.rules) >= MAX_RULES:
                return OTHER
            self.rules.add(rule)
        return rule


def configure(mode: str, listen: str = '127.0.0.1:9464') -> None:
    """Turn metrics off, on (``registry``) or on and exported (``serve``).

    Idempotent, and may be called again with another mode.  Failing to
    create or export the metrics is logged, not raised.

    :raises ValueError: mode is not one of :data:`MODES`.
    """
    global _on, _m
    if mode not in MODES:
        raise ValueError(f'metrics must be one of {MODES}, not {mode!r}')
    if mode == 'off':
        _on = False
        return
    with _lock:
        if _m is None:
            try:
                import prometheus_client

                _m = _Metrics(prometheus_client)
            except (ImportError, ValueError) as e:
                # Not installed, or the names are taken in REGISTRY.
                LOG.error('oslo.opa: metrics are off: %s', e)
                return
        _on = True
        if mode == 'serve':
            _serve(listen)


def _serve(listen: str) -> None:
    """Start the HTTP exporter on listen, once per process."""
    global _served_pid, _server
    if _served_pid == os.getpid():
        return
    _served_pid = os.getpid()  # tried: not again on every configure
    import prometheus_client

    host, _, port = listen.rpartition(':')
    host = host.strip('[]')
    multiproc = bool(os.environ.get('PROMETHEUS_MULTIPROC_DIR'))
    registry = prometheus_client.REGISTRY
    if multiproc:
        from prometheus_client import multiprocess

        # Every worker's files, summed: any one worker can serve them.
        registry = prometheus_client.CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    try:
        if not host:
            raise ValueError(listen)
        _server = prometheus_client.start_http_server(
            int(port), addr=host, registry=registry
        )
    except ValueError:
        LOG.error('oslo.opa: metrics_listen %r is not host:port', listen)
    except OSError as e:
        if multiproc and e.errno == errno.EADDRINUSE:
            LOG.info(
                'oslo.opa: metrics on %s served by another worker', listen
            )
        else:
            LOG.error('oslo.opa: cannot serve metrics on %s: %s', listen, e)
    else:
        LOG.info('oslo.opa: serving metrics on %s', listen)


def _failed() -> None:
    # A metric is not worth a decision, nor a log line per decision.
    global _complained
    if not _complained:
        _complained = True
        LOG.warning('oslo.opa: recording a metric failed', exc_info=True)


def enabled() -> bool:
    """Whether metrics are recorded (a decision asks before timing)."""
    return _on


def decision(
    rule: str, allowed: bool, driver: str, path: str, seconds: float
) -> None:
    """One decision: its result, who made it, how, and how long it took."""
    if not _on:
        return
    try:
        m = _m
        key = (rule, allowed, driver, path)
        both = m.children.get(key)
        if both is None:
            label = m.rule(rule)
            both = (
                m.child(
                    m.decisions,
                    label,
                    'allow' if allowed else 'deny',
                    driver,
                    path,
                ),
                m.child(m.duration, driver, path),
            )
            if label is rule:  # made-up names are not kept
                m.children[key] = both
        both[0].inc()
        both[1].observe(seconds)
    except Exception:  # noqa: BLE001 - never into a decision
        _failed()


def _inc(name: str, *values: str) -> None:
    try:
        m = _m
        metric = getattr(m, name)
        if name in _BY_RULE:
            values = (m.rule(values[0]), *values[1:])
        m.child(metric, *values).inc()
    except Exception:  # noqa: BLE001 - never into a decision
        _failed()


def shadow_mismatch(rule: str) -> None:
    """A shadow decision differed from the enforced one."""
    if _on:
        _inc('mismatches', rule)


def shadow_dropped(rule: str) -> None:
    """A shadow decision was not made."""
    if _on:
        _inc('dropped', rule)


def fallback(rule: str, to: str) -> None:
    """The failure mode decided (to: oslo.policy, embedded or deny)."""
    if _on:
        _inc('fallbacks', rule, to)


def evaluation_error(rule: str, driver: str) -> None:
    """The driver could not decide rule."""
    if _on:
        _inc('errors', rule, driver)


def reload(ok: bool, driver: str) -> None:
    """A policy load or reload, and whether it took effect."""
    if _on:
        _inc('reloads', driver, 'ok' if ok else 'failed')


def breaker_opened(driver: str) -> None:
    """The circuit breaker opened."""
    if _on:
        _inc('opens', driver)


def log_dropped(sink: str) -> None:
    """A decision log entry was dropped."""
    if _on:
        _inc('log_dropped', sink)


def breaker(driver: str, state: str) -> None:
    """The circuit breaker's state: ``closed`` or ``open``."""
    if not _on:
        return
    try:
        _m.child(_m.breaker, driver).set(1 if state == 'open' else 0)
    except Exception:  # noqa: BLE001 - never into a decision
        _failed()


def revision(revision: str, driver: str) -> None:
    """The policy revision now in force under driver (replaces the last)."""
    if not _on:
        return
    try:
        m = _m
        with _lock:
            old = m.revisions.get(driver)
            if old == revision:
                return
            m.revisions[driver] = revision
            if old is not None:
                # In multiprocess mode the old sample stays in this
                # worker's file: 0 says it is no longer in force here.
                m.child(m.revision, driver, old).set(0)
                m.children.pop((id(m.revision), driver, old), None)
                m.revision.remove(driver, old)
            m.child(m.revision, driver, revision).set(1)
    except Exception:  # noqa: BLE001 - never into a reload
        _failed()


def driver_label(driver: Any) -> str:
    """The driver label of a driver instance: ``EmbeddedDriver`` is
    ``embedded``, ``HttpDriver`` ``http``."""
    return type(driver).__name__.removesuffix('Driver').lower()


def revision_of(policy: Any) -> str:
    """The revision of a loaded policy: its conversion's (manifest.json,
    as in decision logs), or for a conversion older than those, a digest
    of its Rego modules, overlays and data."""
    if policy.manifest.revision:
        return policy.manifest.revision
    digest = hashlib.sha256()
    for name, text in sorted(getattr(policy, 'modules', {}).items()):
        digest.update(f'{name}\0{text}\0'.encode())
    overlays = getattr(policy, 'overlays', None)
    for name, text in sorted(getattr(overlays, 'files', {}).items()):
        digest.update(f'overlay:{name}\0{text}\0'.encode())
    digest.update(str(getattr(policy, 'data_json', '')).encode())
    return f'{policy.manifest.package_prefix}-{digest.hexdigest()[:16]}'


def policy_loaded(driver: Any, policy: Any) -> None:
    """A driver put policy in force: a reload, and its revision."""
    if not _on:
        return
    try:
        label = driver_label(driver)
        reload(True, label)
        revision(revision_of(policy), label)
    except Exception:  # noqa: BLE001 - never into a reload
        _failed()
