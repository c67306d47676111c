"""Shadow mode: oslo.policy decides, Rego runs beside it and is compared.

With ``[oslo_opa] mode = shadow`` the ``opa`` check evaluates the rule's
original check string (the manifest keeps it) with oslo.policy, against
the service's own Enforcer, exactly as oslo.policy would without
oslo.opa: the same answer, the same exceptions, its scope checks around
it.  The decision and a shallow copy of its input go to a bounded queue;
a background thread asks Rego for the same decision and compares.  A
difference is counted by rule, logged once per rule and input shape (at
most :data:`LINES_PER_MINUTE` lines a minute), and recorded in the
decision log.  A full queue drops the comparison and counts it; the
request never waits.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from oslo_policy import _checks, _parser

from oslo_opa import background, inputs, metrics, notes
from oslo_opa.logs import masking
from oslo_opa.logs.events import Decision

LOG = logging.getLogger(__name__)

LINES_PER_MINUTE = 10
# What oslo.policy's outcome is when its check raises.
RAISED = 'raise'


def shape(value: Any) -> Any:
    """value's structure, with its scalars replaced by their types: two
    inputs with one shape take the same path through a rule."""
    if isinstance(value, Mapping):
        return {str(k): shape(v) for k, v in sorted(value.items(), key=str)}
    if isinstance(value, (list, tuple)):
        return sorted({json.dumps(shape(v), sort_keys=True) for v in value})
    return type(value).__name__


class Shadow:
    """The opa check's decisions in shadow mode, for one Decider."""

    def __init__(self, decider: Any, queue_size: int) -> None:
        self.decider = decider
        self.mismatches: collections.Counter[str] = collections.Counter()
        self.dropped: collections.Counter[str] = collections.Counter()
        self.errors: collections.Counter[str] = collections.Counter()
        self.compared = 0
        self._originals: tuple[Any, dict[str, Any]] = (None, {})
        self._said: set[tuple[str, str]] = set()
        self._lines: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()
        self._mask = masking.Mask()
        self._worker = background.Worker(
            'oslo.opa shadow', self._compare_all, queue_size, self._drop
        )

    # --- on the request ---------------------------------------------------

    def check(
        self,
        rule: str,
        target: Mapping[str, Any],
        creds: Any,
        enforcer: Any,
        current_rule: str | None,
    ) -> bool:
        """oslo.policy's decision on rule's original check string."""
        original = self._original(rule)
        if original is None:
            LOG.warning(
                'oslo.opa: rule %r: shadow mode has no original check '
                'string for it (the manifest is not loaded or does not '
                'list it); denying',
                rule,
            )
            return False
        if current_rule is not None and current_rule != rule:
            # Reached through rule:<rule> from the rule being enforced,
            # which is the one compared.
            return _checks._check(
                original, target, creds, enforcer, current_rule
            )
        try:
            allowed = _checks._check(
                original, target, creds, enforcer, current_rule
            )
        except Exception:
            self._queue(rule, target, creds, RAISED)
            raise
        self._queue(rule, target, creds, bool(allowed))
        return allowed

    def _queue(self, rule: str, target: Any, creds: Any, outcome: Any) -> None:
        # Shallow copies: the service may change its dicts after this.
        self._worker.put(
            (rule, dict(target), dict(creds), outcome, time.time_ns())
        )

    def _original(self, rule: str) -> Any:
        manifest = self.decider._manifest()
        if manifest is None:
            return None
        seen, parsed = self._originals
        if seen is not manifest:
            parsed = {}
            self._originals = (manifest, parsed)
        check = parsed.get(rule)
        if check is None:
            entry = manifest.rules.get(rule)
            if entry is None:
                return None
            check = parsed[rule] = _parser.parse_rule(entry.check_str)
        return check

    def _drop(self, item: tuple) -> None:
        self.dropped[item[0]] += 1
        metrics.shadow_dropped(item[0])

    # --- in the background ------------------------------------------------

    def _compare_all(self, items: list[tuple]) -> None:
        for rule, target, creds, native, when in items:
            self._compare(rule, target, creds, native, when)

    def _compare(
        self, rule: str, target: Any, creds: Any, native: Any, when: int
    ) -> None:
        try:
            creds_dict = inputs.credentials_dict(creds)
        except Exception:  # noqa: BLE001 - a creds object Rego cannot read
            creds_dict = {}
        started = time.perf_counter_ns()
        rego, doc, error = self.decider.ask(rule, target, creds_dict)
        took = time.perf_counter_ns() - started
        route, decision_id = notes.take()
        self.compared += 1
        allowed = native is True
        if rego is None:
            self.errors[rule] += 1
            self._say(
                rule,
                'error',
                'oslo.opa: shadow: rule %r: Rego gave no decision (%s)',
                rule,
                error,
            )
        elif rego != allowed:
            self.mismatches[rule] += 1
            metrics.shadow_mismatch(rule)
            self._mismatch(rule, native, rego, doc, target, creds_dict)
        log = self.decider.log
        if log is not None:
            log.record(
                Decision(
                    rule,
                    self.decider._path(rule),
                    doc,
                    allowed,
                    when,
                    took,
                    self.decider.driver_name,
                    route,
                    decision_id,
                    {
                        'shadow': {
                            'oslo_policy': native,
                            'rego': rego,
                            'match': rego == allowed,
                            'error': error or None,
                        }
                    },
                )
            )

    def _mismatch(
        self,
        rule: str,
        native: Any,
        rego: bool,
        doc: Any,
        target: Any,
        creds: dict,
    ) -> None:
        masked = self._mask.apply({'input': doc})
        key = json.dumps(shape(masked.get('input')), sort_keys=True)
        self._say(
            rule,
            key,
            'oslo.opa: shadow: rule %r: oslo.policy says %s, Rego says %s '
            '(%d so far for this rule); input %s%s',
            rule,
            'raise' if native == RAISED else ('allow' if native else 'deny'),
            'allow' if rego else 'deny',
            self.mismatches[rule],
            json.dumps(masked.get('input'), sort_keys=True, default=str),
            self._explanation(rule, target, creds),
        )

    def _explanation(self, rule: str, target: Any, creds: dict) -> str:
        """Why Rego decided as it did, in one masked phrase."""
        from oslo_opa import explain, explain_text

        try:
            result = self.decider.explain(rule, target, creds)
        except Exception as e:  # noqa: BLE001 - the line is still useful
            return f'; no explanation ({type(e).__name__})'
        leaves = explain_text.render_leaves(explain.failing_leaves(result))
        why = f'; Rego failed on: {leaves}' if leaves else ''
        notes = list(result.get('notes') or ())
        stack = [result['tree']]
        while stack:  # a hand-edited rule's node says so
            node = stack.pop()
            if node.get('note'):
                notes.append(f'{node["text"]}: {node["note"]}')
            stack.extend(node.get('children') or ())
        return why + ''.join(f'; {note}' for note in notes)

    def _say(self, rule: str, kind: str, fmt: str, *args: Any) -> None:
        """Log once per (rule, kind), at most LINES_PER_MINUTE a minute."""
        now = time.monotonic()
        with self._lock:
            if (rule, kind) in self._said:
                return
            while self._lines and self._lines[0] < now - 60:
                self._lines.popleft()
            if len(self._lines) >= LINES_PER_MINUTE:
                return
            self._lines.append(now)
            self._said.add((rule, kind))
        LOG.warning(fmt, *args)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued decision is compared (True)."""
        return self._worker.flush(timeout)

    def close(self) -> None:
        self._worker.close()
