"""Decision logs: every decision as an event in OPA's decision-log format.

One package per concern, as OPA lays out its logs plugin:
:mod:`~oslo_opa.logs.masking` erases secrets, :mod:`~oslo_opa.logs.events`
builds the events and owns the background thread, and
:mod:`~oslo_opa.logs.sinks` writes them to a file or a decision-log
service.
"""

from __future__ import annotations

import logging
from typing import Any

from oslo_opa import metrics
from oslo_opa.errors import OsloOpaError
from oslo_opa.logs.events import DecisionLog
from oslo_opa.logs.masking import Mask
from oslo_opa.logs.sinks import FileSink, ServiceSink

LOG = logging.getLogger(__name__)


def from_conf(group: Any, service: str | None) -> DecisionLog | None:
    """The decision log ``[oslo_opa]`` asks for, or None (off, or a
    ``decision_log_mask`` entry is not a JSON pointer: logged, and no
    event is written rather than one that may hold what it names).
    With ``decision_log_explain``, the caller sets the log's
    ``explain``."""
    try:
        mask = Mask(group.decision_log_mask)
    except OsloOpaError as e:
        LOG.error('oslo.opa: %s; decision logging is off', e)
        return None
    sinks: list[Any] = []
    if group.decision_log_file:
        sinks.append(
            FileSink(
                group.decision_log_file,
                group.decision_log_max_bytes,
                group.decision_log_backups,
            )
        )
    if group.decision_log_url:
        sinks.append(
            ServiceSink(
                group.decision_log_url,
                buffer=group.decision_log_buffer,
                on_drop=lambda n: _dropped('service', n),
            )
        )
    if not sinks:
        return None
    return DecisionLog(
        sinks,
        mask,
        service or 'unknown',
        mode=group.mode,
        buffer=group.decision_log_buffer,
        on_drop=lambda n: _dropped('queue', n),
    )


def _dropped(sink: str, count: int) -> None:
    for _ in range(count):
        metrics.log_dropped(sink)
