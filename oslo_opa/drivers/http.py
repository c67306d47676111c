"""The HTTP driver: decisions from an OPA server, the sidecar way.

``[oslo_opa] driver = http`` sends each decision to a local OPA with the
Data API (``POST /v1/data/<manifest path>``).  ``rego_path`` is still
read, for the manifest: it maps rule names to REST paths, and its
``target_keys``/``credentials`` project the input exactly as the embedded
driver does (:meth:`oslo_opa.engine.RegoPolicy.input_for`), so OPA is
sent only what a rule reads.  OPA must serve the same conversion (``oslo-
opa bundle`` or ``oslo-opa push``).

Transport
    One pool of keep-alive connections per process (``transport.py``):
    a decision is one round trip, bounded by timeouts; failures before
    the request was sent are retried ``opa_retries`` times, nothing
    after.
Batches
    ``decide_many`` asks the bundle's batch rule (``oslo_opa/batch.py``)
    for up to ``BATCH_LIMIT`` decisions in one request; one request per
    item where OPA has no batch rule, or could not answer a batch whole
    (an item erred: it gets its error, the others their decisions).
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
Answers
    Only HTTP 200 with ``{"result": true|false}`` is a decision.  A
    non-200, an undefined ``result`` (the path is not loaded), a
    non-boolean, invalid JSON, a timeout or an open circuit raise
    :class:`~oslo_opa.drivers.base.DecisionError` naming the rule (the
    Decider then applies ``failure_mode``).  Error texts never carry
    input values: OPA's own messages are reduced to their code.
    ``decision_id`` (when OPA logs decisions) and the latency are logged
    at debug level.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from oslo_opa import batch, inputs, overlay
from oslo_opa.drivers.base import DecisionError, PolicyDirDriver, Settings
from oslo_opa.drivers.transport import Transport, TransportError
from oslo_opa.engine import RegoPolicy
from oslo_opa.opts import HTTP_DEFAULTS

LOG = logging.getLogger(__name__)

DEFAULTS = HTTP_DEFAULTS
# The first probe after the circuit opens; later ones double.
FIRST_PROBE_DELAY = 0.1
# A warm-up stops after this long (each request is bounded anyway).
WARM_UP_BUDGET = 120.0
# Decisions asked in one request at most, by decide_many.
BATCH_LIMIT = 1000
# One encoder for every request (json.dumps with options makes one each).
_encode = json.JSONEncoder(separators=(',', ':')).encode
# OPA's whole answer when it logs no decisions: no need to parse it.
_PLAIN = {
    b'{"result":true}\n': True,
    b'{"result":false}\n': False,
    b'{"result":true}': True,
    b'{"result":false}': False,
}
# --- the driver --------------------------------------------------------------


def _option(options: Mapping[str, Any], name: str) -> Any:
    value = options.get(name)
    return DEFAULTS[name] if value is None else value


class HttpDriver(PolicyDirDriver):
    """Decide with an OPA server (``driver = http``).

    ``rego_path`` is required: its manifest maps rules to OPA paths.
    """

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        opts = settings.options
        self.url = str(_option(opts, 'opa_url'))
        read_timeout = float(_option(opts, 'opa_read_timeout'))
        self.transport = Transport(
            self.url,
            connect_timeout=float(_option(opts, 'opa_connect_timeout')),
            read_timeout=read_timeout,
            retries=int(_option(opts, 'opa_retries')),
            max_connections=int(_option(opts, 'opa_max_connections')),
            ca_file=opts.get('opa_ca_file'),
            cert_file=opts.get('opa_cert_file'),
            key_file=opts.get('opa_key_file'),
            tls_verify=bool(_option(opts, 'opa_tls_verify')),
        )
        if not _option(opts, 'opa_tls_verify'):
            LOG.warning(
                'oslo.opa: opa_tls_verify is off: the identity of the OPA '
                'at %s is not checked',
                self.url,
            )
        # OPA's first query on a path prepares it: give warm-up more time.
        self._warm_timeout = (
            self.transport.connect_timeout,
            max(read_timeout * 4, 2.0),
        )
        self._query = (
            '?strict-builtin-errors' if settings.strict_builtin_errors else ''
        )
        self._interval = float(_option(opts, 'opa_circuit_breaker_interval'))
        self._warm_up = bool(_option(opts, 'opa_warm_up'))

        # Circuit breaker and background work, under _state_lock.
        self._state_lock = threading.Lock()
        self._open = False
        self._open_reason = ''
        self._trips = 0
        self._probe_delay = FIRST_PROBE_DELAY
        self._warm_wanted: int | None = None
        self._dropped_seen = 0
        self._worker_alive = False
        self._closed = threading.Event()
        self._warmed = threading.Event()
        self._unknown_overlays = False
        self._no_batch = False
        self._check()

    # --- policy (manifest) ---------------------------------------------------

    what = 'the manifest'

    def load(self) -> RegoPolicy:
        # Only the manifest and module texts are read (for paths and
        # projection), and the overlays OPA holds too (a rule they can
        # change is sent the whole input); OPA compiles the policy.
        paths = self.settings.overlay_path
        return RegoPolicy(
            self.settings.rego_path,
            overlays=overlay.load(paths, embedded=False) if paths else None,
        )

    def loaded(self, policy: RegoPolicy) -> None:
        self._no_batch = False
        self._request_warm_up()

    def input_for(
        self, rule: str, creds: Mapping[str, Any], target: Mapping[str, Any]
    ) -> dict[str, Any]:
        doc = super().input_for(rule, creds, target)
        if self._unknown_overlays:
            # OPA holds overlays this service was not told about: they
            # may read any key.
            return inputs.document(creds, target, rule)
        return doc

    def _look_for_overlays(self, policy: RegoPolicy) -> None:
        """Whether OPA holds overlays that overlay_path does not name (a
        rule sent only its own keys would hide the others from them):
        then send every rule the whole input, and say so once."""
        if policy.overlays or self._unknown_overlays:
            return
        try:
            status, data = self.transport.request(
                'POST',
                '/v1/data/oslo_opa/overlay',
                _warm_body(''),
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

    # --- deciding ------------------------------------------------------------

    def decide(self, rule: str, input_doc: Mapping[str, Any]) -> bool:
        policy = self._policy
        if policy is None:
            policy = self._current()
        entry = policy.manifest.rules.get(rule)
        if entry is None:
            raise DecisionError(f'rule {rule!r} is not in the manifest')
        if self._open or self._closed.is_set():
            raise DecisionError(self._not_asking(rule))
        try:
            body = _encode({'input': input_doc}).encode('ascii')
        except (TypeError, ValueError) as e:
            raise DecisionError(
                f'rule {rule!r}: the input is not JSON ({type(e).__name__})'
            ) from None
        start = time.monotonic()
        try:
            status, data = self.transport.request(
                'POST', f'/v1/data/{entry.path}{self._query}', body
            )
        except TransportError as e:
            self._trip(e)
            raise DecisionError(
                f'rule {rule!r}: OPA at {self.url}: {e} (after '
                f'{time.monotonic() - start:.3f}s)'
            ) from None
        if self._trips:
            self._trips = 0
        if self.transport.num_dropped != self._dropped_seen:
            # OPA closed idle connections: restarted, most likely, and
            # its prepared queries are gone.
            self._dropped_seen = self.transport.num_dropped
            self._request_warm_up()
        result = _PLAIN.get(data) if status == 200 else None
        decision_id = None
        if result is None:
            result, decision_id = _decision(rule, entry.path, status, data)
        if LOG.isEnabledFor(logging.DEBUG):
            LOG.debug(
                'oslo.opa: rule %r: %s from OPA in %.2f ms (decision_id %s)',
                rule,
                'allow' if result else 'deny',
                (time.monotonic() - start) * 1e3,
                decision_id,
            )
        return result

    def decide_many(
        self, items: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> list[bool | DecisionError]:
        """Several decisions in one request per BATCH_LIMIT items (the
        bundle's batch rule, see oslo_opa/batch.py); one request each
        where OPA has no batch rule, and for the items of a batch OPA
        could not answer whole (one of them erred: it gets its error,
        the others their decisions)."""
        policy = self._policy
        if len(items) < 2 or self._no_batch or policy is None:
            return super().decide_many(items)
        out: list[bool | DecisionError | None] = [None] * len(items)
        asked = []
        for i, (rule, doc) in enumerate(items):
            entry = policy.manifest.rules.get(rule)
            if entry is None:
                out[i] = DecisionError(f'rule {rule!r} is not in the manifest')
            else:
                slug = entry.path.rsplit('/', 2)[-2]
                asked.append((i, rule, slug, doc))
        prefix = policy.manifest.package_prefix
        for start in range(0, len(asked), BATCH_LIMIT):
            chunk = asked[start : start + BATCH_LIMIT]
            got = self._batch(prefix, chunk)
            if got is None:
                got = super().decide_many([(r, d) for _, r, _, d in chunk])
            for (i, _, _, _), value in zip(chunk, got, strict=True):
                out[i] = value
        return out  # type: ignore[return-value]

    def _batch(
        self, prefix: str, chunk: list[tuple[int, str, str, Any]]
    ) -> list[bool | DecisionError] | None:
        """One batch's decisions, or None to ask its items one by one."""
        if self._open or self._closed.is_set():
            return [DecisionError(self._not_asking(r)) for _, r, _, _ in chunk]
        try:
            body = batch.body([(slug, doc) for _, _, slug, doc in chunk])
        except (TypeError, ValueError):
            return None
        try:
            status, data = self.transport.request(
                'POST', f'/v1/data/{batch.path(prefix)}{self._query}', body
            )
        except TransportError as e:
            self._trip(e)
            return [
                DecisionError(f'rule {r!r}: OPA at {self.url}: {e}')
                for _, r, _, _ in chunk
            ]
        if status != 200:
            return None  # an item erred: each gets its own answer
        answers = batch.answers(data, len(chunk))
        if answers is None:
            # No batch rule in OPA (a bundle not built by oslo-opa, or
            # an older one): ask one by one until the policy changes.
            self._no_batch = True
            return None
        return [
            a
            if a is not None
            else DecisionError(
                f'rule {r!r}: no boolean allow in OPA for this input (is '
                f'the policy loaded? see oslo-opa status)'
            )
            for (_, r, _, _), a in zip(chunk, answers, strict=True)
        ]

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
            body = _warm_body(name)
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
                    _warm_body(name),
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

    def close(self) -> None:
        self._closed.set()
        self.transport.close()


def _warm_body(rule: str) -> bytes:
    return json.dumps(
        {'input': {'credentials': {}, 'target': {}, 'rule': rule}},
        separators=(',', ':'),
    ).encode('ascii')


def _decision(
    rule: str, path: str, status: int, data: bytes
) -> tuple[bool, Any]:
    """(allow, decision_id) from OPA's answer.

    :raises DecisionError: the answer is not a boolean decision.
    """
    if status != 200:
        raise DecisionError(
            f'rule {rule!r}: OPA answered HTTP {status}{_opa_code(data)}'
        )
    try:
        doc = json.loads(data)
    except ValueError:
        raise DecisionError(
            f'rule {rule!r}: OPA answered with invalid JSON'
        ) from None
    if not isinstance(doc, dict):
        raise DecisionError(
            f'rule {rule!r}: OPA answered with unexpected JSON'
        )
    if 'result' not in doc:
        raise DecisionError(
            f'rule {rule!r}: {path} is undefined in OPA (is the policy '
            f'loaded? see oslo-opa status)'
        )
    result = doc['result']
    if result is not True and result is not False:
        raise DecisionError(f'rule {rule!r}: allow is not a boolean')
    return result, doc.get('decision_id')


def _opa_code(data: bytes) -> str:
    """OPA's error code from an error answer (its message may hold data)."""
    try:
        doc = json.loads(data)
    except ValueError:
        return ''
    code = doc.get('code') if isinstance(doc, dict) else None
    if isinstance(code, str) and code.replace('_', '').isalnum():
        return f' ({code})'
    return ''
