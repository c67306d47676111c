"""Decision events in OPA's decision-log format, written off the
request path.

A decision hands :meth:`DecisionLog.record` a few references (no
copying, no formatting: that costs the request); the background thread
builds each event, erases its secrets (:mod:`~oslo_opa.logs.masking`)
and gives it to the sinks.  An event has OPA's fields::

    {"labels": {"id": ..., "version": ..., "service": ...},
     "decision_id": ..., "path": "nova/os_compute_api_servers_index/allow",
     "input": {...}, "result": true, "timestamp": "...Z",
     "metrics": {"timer_rego_query_eval_ns": ...},
     "bundles": {"oslo_opa": {"revision": ...}},
     "oslo_opa": {"rule": ..., "driver": ..., "mode": ..., "route": ...,
                  "cached": false, "fallback": null, ...}}

``oslo_opa`` also holds, when they apply: ``reasons`` (the overlays'
reasons, ``{"deny": {rule: [reason]}, "grant": {...}}``, when an
overlay decided), ``error`` (why the driver gave no decision) and, in
shadow mode, ``shadow`` (``oslo_policy``: the decision the service got,
true, false or "raise"; ``rego``: Rego's, or null; ``match``).

so that tools reading OPA's logs read these; ``oslo_opa`` holds what
only oslo.opa knows.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from oslo_opa import background
from oslo_opa.logs import masking

LOG = logging.getLogger(__name__)

# labels.id: this process's decisions, as OPA's instance id.
INSTANCE_ID = str(uuid.uuid4())


def _version() -> str:
    try:
        return importlib.metadata.version('oslo.opa')
    except importlib.metadata.PackageNotFoundError:
        return 'unknown'


def timestamp(ns: int) -> str:
    """RFC 3339 in UTC with nanoseconds, as OPA writes it."""
    seconds, frac = divmod(ns, 1_000_000_000)
    when = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return when.strftime('%Y-%m-%dT%H:%M:%S') + f'.{frac:09d}Z'


class Decision:
    """What a decision hands the log: references, formatted later."""

    __slots__ = (
        'rule',
        'path',
        'input',
        'result',
        'time_ns',
        'eval_ns',
        'driver',
        'route',
        'decision_id',
        'extra',
    )

    def __init__(
        self,
        rule: str,
        path: str | None,
        input_doc: Any,
        result: bool,
        time_ns: int,
        eval_ns: int | None,
        driver: str,
        route: str | None,
        decision_id: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.rule = rule
        self.path = path
        self.input = input_doc
        self.result = result
        self.time_ns = time_ns
        self.eval_ns = eval_ns
        self.driver = driver
        self.route = route
        self.decision_id = decision_id
        self.extra = extra


class DecisionLog:
    """Builds decision events in a background thread and writes them.

    :param sinks: objects with ``write(events)`` and ``close()`` (and
        optionally ``tick()``), see :mod:`oslo_opa.logs.sinks`.
    :param mask: erases secrets from each event.
    :param service: ``labels.service`` (the service's name).
    :param mode: ``enforce`` or ``shadow``, for ``oslo_opa.mode``.
    :param buffer: events waiting at most; more are dropped and counted.
    :param revision: returns the policy revision in force.
    :param on_drop: called with the number of events dropped.
    :param explain: ``explain(rule, target, creds)``, an explanation
        (:mod:`oslo_opa.explain`): denials then carry their failing
        checks, credentials masked, as ``oslo_opa.failing`` (it costs
        an evaluation per node of the rule, in this thread).
    """

    def __init__(
        self,
        sinks: Sequence[Any],
        mask: masking.Mask,
        service: str,
        mode: str = 'enforce',
        buffer: int = 10000,
        revision: Callable[[], str] = lambda: '',
        on_drop: Callable[[int], None] | None = None,
        explain: Callable[[str, Any, Any], Any] | None = None,
    ) -> None:
        self.sinks = list(sinks)
        self.explain = explain
        self.mask = mask
        self.mode = mode
        self.revision = revision
        self.labels = {
            'id': INSTANCE_ID,
            'version': _version(),
            'service': service,
        }
        self._on_drop = on_drop
        self._worker = background.Worker(
            'oslo.opa decision log',
            self._write,
            buffer,
            on_drop=self._dropped,
            tick=self._tick,
        )

    @property
    def dropped(self) -> int:
        return self._worker.dropped

    def record(self, decision: Decision) -> None:
        """Queue decision's event (never blocks, never raises)."""
        self._worker.put(decision)

    def _dropped(self, _item: Any) -> None:
        if self._on_drop is not None:
            self._on_drop(1)

    def event(self, d: Decision) -> dict[str, Any]:
        """d as an OPA decision event, secrets erased."""
        revision = self.revision()
        meta = {
            'rule': d.rule,
            'driver': d.driver,
            'mode': self.mode,
            'route': d.route,
            'cached': d.route == 'cache',
            'fallback': None,
        }
        if d.extra:
            meta.update(d.extra)
            reasons = meta.get('reasons')
            if isinstance(reasons, tuple):
                # (function, rule, input): the overlays' reasons, asked
                # here rather than on the request.
                meta['reasons'] = reasons[0](reasons[1], reasons[2])
        event: dict[str, Any] = {
            'labels': self.labels,
            'decision_id': d.decision_id or str(uuid.uuid4()),
            'path': d.path,
            'input': d.input,
            'result': d.result,
            'timestamp': timestamp(d.time_ns),
            'metrics': {},
            'oslo_opa': meta,
        }
        if d.eval_ns is not None:
            event['metrics']['timer_rego_query_eval_ns'] = d.eval_ns
        if self.explain is not None and d.result is False:
            meta['failing'] = self._failing(d)
        if revision:
            event['bundles'] = {'oslo_opa': {'revision': revision}}
        return self.mask.apply(event)

    def _failing(self, d: Decision) -> Any:
        from oslo_opa import explain, explain_text

        doc = d.input if isinstance(d.input, Mapping) else {}
        try:
            result = self.explain(
                d.rule, doc.get('target') or {}, doc.get('credentials') or {}
            )
        except Exception as e:  # noqa: BLE001 - the event still goes
            return {'error': type(e).__name__}
        return explain_text.mask(explain.failing_leaves(result))

    def _write(self, decisions: list[Decision]) -> None:
        events = [self.event(d) for d in decisions]
        for sink in self.sinks:
            try:
                sink.write(events)
            except Exception as e:  # noqa: BLE001 - one sink failing
                LOG.error(
                    'oslo.opa: decision log %s: %s: %s',
                    type(sink).__name__,
                    type(e).__name__,
                    e,
                )

    def _tick(self) -> None:
        for sink in self.sinks:
            tick = getattr(sink, 'tick', None)
            if tick is not None:
                tick()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until queued events reached the sinks (True) or timeout;
        a service sink still sends on its own schedule."""
        return self._worker.flush(timeout)

    def close(self) -> None:
        self._worker.close()
        for sink in self.sinks:
            sink.close()
