"""What keeps the http driver able to decide: the circuit breaker, its
probes, and the warm-up, done by one background thread.

Circuit breaker
    A request that fails at the transport level (timeout, refused or
    reset connection, broken TLS, not HTTP) opens the circuit: decisions
    then fail at once, without a request, and a background thread probes
    OPA with a real decision request, first after 0.1 s and then at
    doubling delays up to ``opa_circuit_breaker_interval``.  The first
    answer closes the circuit.  So an outage costs at most one timeout
    per interval, not one per decision, and recovery needs nothing.
    HTTP errors (500) and bad answers do not open it: OPA answered.
Warm-up
    OPA prepares each query path on its first use.  At start-up, after
    the manifest changes, after an outage and when OPA closed the idle
    connections (a restart), a background thread asks every rule's path
    once (sequentially, bounded in count and time), so real requests do
    not pay it.  OPA's server keeps at most 100 prepared
    paths (a ring): a service with more rules keeps its last 100 warm.
    The warm-up also asks whether OPA holds overlays (``data.oslo_opa.
    overlay``) that ``overlay_path`` does not name: rules are sent only
    the keys they read, which such overlays might not see, so from then
    on every rule is sent the whole input (and a warning says so).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from oslo_opa import metrics
from oslo_opa.drivers.transport import TransportError

# The driver's logger: operators configure one name for the driver.
LOG = logging.getLogger('oslo_opa.drivers.http')

# The first probe after the circuit opens; later ones double.
FIRST_PROBE_DELAY = 0.1
# A warm-up stops after this long (each request is bounded anyway).
WARM_UP_BUDGET = 120.0


class Upkeep:
    """The circuit breaker and the warm-up of :class:`HttpDriver`.

    A mixin: the driver provides ``transport``, ``url``, ``_policy``,
    ``_generation``, ``_query`` (the query string of decisions) and
    ``_warm_timeout``, and calls :meth:`_start_upkeep` first.
    """

    transport: Any
    url: str
    _policy: Any
    _generation: int
    _query: str
    _warm_timeout: tuple[float, float]

    def _start_upkeep(self, interval: float, warm_up: bool) -> None:
        # Circuit breaker and background work, under _state_lock.
        self._interval = interval
        self._warm_up = warm_up
        self._state_lock = threading.Lock()
        self._open = False
        self._open_reason = ''
        self._trips = 0
        self._probe_delay = FIRST_PROBE_DELAY
        self._warm_wanted: int | None = None
        self._worker_alive = False
        self._closed = threading.Event()
        self._warmed = threading.Event()
        self._unknown_overlays = False
        metrics.breaker(metrics.driver_label(self), 'closed')

    def _not_asking(self, rule: str) -> str:
        if self._closed.is_set():
            return f'rule {rule!r}: the http driver is closed'
        return (
            f'rule {rule!r}: OPA at {self.url} is not answering '
            f'({self._open_reason}); not asked until a probe succeeds'
        )

    # --- circuit breaker -----------------------------------------------------

    def _trip(self, err: TransportError) -> None:
        """Open the circuit after a transport failure."""
        if self._interval <= 0:
            return
        with self._state_lock:
            if self._open or self._closed.is_set():
                return
            self._open = True
            self._open_reason = str(err)
            self._trips += 1
            self._probe_delay = min(
                self._interval, FIRST_PROBE_DELAY * 2 ** (self._trips - 1)
            )
        metrics.breaker_opened(metrics.driver_label(self))
        metrics.breaker(metrics.driver_label(self), 'open')
        LOG.error(
            'oslo.opa: OPA at %s is not answering (%s): decisions fail '
            '(failure_mode) without asking it until it answers a probe '
            '(every %.1f s at most)',
            self.url,
            err,
            self._interval,
        )
        self._kick()

    @property
    def circuit_open(self) -> bool:
        """Whether decisions currently fail without asking OPA."""
        return self._open

    def _probe(self) -> bool:
        """One request that proves OPA answers (any HTTP status)."""
        policy = self._policy
        if policy is not None and policy.manifest.rules:
            name, entry = next(iter(policy.manifest.rules.items()))
            body = warm_body(name)
            path = f'/v1/data/{entry.path}{self._query}'
            method = 'POST'
        else:
            body, path, method = None, '/health', 'GET'
        try:
            self.transport.request(method, path, body)
        except TransportError as e:
            self._open_reason = str(e)
            return False
        return True

    # --- background work: probes and warm-up ---------------------------------

    def _request_warm_up(self) -> None:
        if not self._warm_up:
            self._warmed.set()
            return
        with self._state_lock:
            self._warm_wanted = self._generation
            self._warmed.clear()
        self._kick()

    def _kick(self) -> None:
        """Start the background thread unless it runs (it exits idle)."""
        with self._state_lock:
            if self._worker_alive or self._closed.is_set():
                return
            self._worker_alive = True
        thread = threading.Thread(
            target=self._work, name='oslo-opa-http', daemon=True
        )
        thread.start()

    def _work(self) -> None:
        try:
            while True:
                with self._state_lock:
                    if self._closed.is_set():
                        return
                    if self._open:
                        task, generation = 'probe', None
                    elif self._warm_wanted is not None:
                        task, generation = 'warm', self._warm_wanted
                        self._warm_wanted = None
                    else:
                        self._worker_alive = False
                        return
                if task == 'probe':
                    if self._closed.wait(self._probe_delay):
                        return
                    if self._probe():
                        with self._state_lock:
                            self._open = False
                            if self._warm_up:
                                self._warm_wanted = self._generation
                                self._warmed.clear()
                        metrics.breaker(metrics.driver_label(self), 'closed')
                        LOG.warning(
                            'oslo.opa: OPA at %s answers again', self.url
                        )
                    else:
                        self._probe_delay = min(
                            self._interval, self._probe_delay * 2
                        )
                else:
                    self._warm(generation)
        except Exception:  # noqa: BLE001 - a background thread must not die
            LOG.exception('oslo.opa: http driver background work failed')
        finally:
            with self._state_lock:
                self._worker_alive = False

    def _warm(self, generation: int | None) -> None:
        """Ask every rule's path once, so OPA has prepared it (and
        whether OPA holds overlays nobody named)."""
        policy = self._policy
        if policy is None:
            return
        self._look_for_overlays(policy)
        start = time.monotonic()
        count = 0
        for name, entry in policy.manifest.rules.items():
            if (
                self._closed.is_set()
                or self._open
                or self._generation != generation
                or time.monotonic() - start > WARM_UP_BUDGET
            ):
                return
            try:
                self.transport.request(
                    'POST',
                    f'/v1/data/{entry.path}{self._query}',
                    warm_body(name),
                    timeout=self._warm_timeout,
                )
            except TransportError as e:
                self._trip(e)
                return
            count += 1
        LOG.debug(
            'oslo.opa: warmed %d OPA paths in %.0f ms',
            count,
            (time.monotonic() - start) * 1e3,
        )
        if self._generation == generation:
            self._warmed.set()

    def wait_warm_up(self, timeout: float | None = None) -> bool:
        """Wait until every rule's path was asked once (True) or timeout."""
        return self._warmed.wait(timeout)

    def _look_for_overlays(self, policy: Any) -> None:
        """Whether OPA holds overlays that overlay_path does not name (a
        rule sent only its own keys would hide the others from them):
        then send every rule the whole input, and say so once."""
        if policy.overlays or self._unknown_overlays:
            return
        try:
            status, data = self.transport.request(
                'POST',
                '/v1/data/oslo_opa/overlay',
                warm_body(''),
                timeout=self._warm_timeout,
            )
            # A package's document is an object (no overlay: undefined).
            held = status == 200 and isinstance(
                json.loads(data).get('result'), dict
            )
        except (TransportError, ValueError, TypeError, AttributeError):
            return
        if held:
            self._unknown_overlays = True
            LOG.warning(
                'oslo.opa: OPA at %s holds overlays (data.oslo_opa.overlay) '
                'but [oslo_opa] overlay_path names none: every rule is '
                'sent the whole input; set overlay_path to the overlays '
                'OPA holds',
                self.url,
            )


def warm_body(rule: str) -> bytes:
    return json.dumps(
        {'input': {'credentials': {}, 'target': {}, 'rule': rule}},
        separators=(',', ':'),
    ).encode('ascii')
