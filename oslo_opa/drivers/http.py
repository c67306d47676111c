"""The HTTP driver: decisions from an OPA server, the sidecar way.

``[oslo_opa] driver = http`` sends each decision to a local OPA with the
Data API (``POST /v1/data/<manifest path>``).  ``rego_path`` is still
read, for the manifest: it maps rule names to REST paths, and its
``target_keys``/``credentials`` project the input exactly as the embedded
driver does (:meth:`oslo_opa.engine.RegoPolicy.input_for`), so OPA is
sent only what a rule reads.  OPA must serve the same conversion (``oslo-
opa bundle`` or ``oslo-opa push``).

Transport
    One pool of keep-alive connections per process, shared by every
    thread and greenlet (``http://``, ``https://`` with a CA bundle and
    an optional client certificate, or ``unix:///path.sock``).  The
    connections are Python's ``http.client`` ones: a decision is one
    packet out and one back, and the client costs about a third of what
    ``requests.Session`` costs per call (which is as much as OPA takes
    to decide; see ``tox -e bench``).  Connect and read timeouts bound
    every request.  Failures before the request was sent (connection
    refused, connect timeout, a send that failed) are retried at once,
    ``opa_retries`` times; nothing is retried once the request may have
    reached OPA.
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

import http.client
import json
import logging
import select
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any

from oslo_opa import inputs, overlay
from oslo_opa.drivers.base import DecisionError, PolicyDirDriver, Settings
from oslo_opa.engine import RegoPolicy
from oslo_opa.errors import OsloOpaError, PolicyLoadError
from oslo_opa.opts import HTTP_DEFAULTS, MAX_RETRIES

LOG = logging.getLogger(__name__)

DEFAULTS = HTTP_DEFAULTS
# The first probe after the circuit opens; later ones double.
FIRST_PROBE_DELAY = 0.1
# A warm-up stops after this long (each request is bounded anyway).
WARM_UP_BUDGET = 120.0
_JSON_HEADERS = {
    'Content-Type': 'application/json',
    'Accept': 'application/json',
}


class TransportError(OsloOpaError):
    """No HTTP answer from OPA; the message says why, never with data."""


# --- transport ---------------------------------------------------------------


class _UnixConnection(http.client.HTTPConnection):
    """http.client's connection over a unix stream socket."""

    def __init__(self, socket_path: str, timeout: float) -> None:
        super().__init__('localhost', timeout=timeout)
        self.socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.socket_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """Whether an idle keep-alive connection was closed by the server.

    An idle connection has nothing to read: readable means EOF, a reset
    or bytes nobody asked for.  poll() where there is one (select() only
    takes descriptors below 1024; eventlet removes poll()).
    """
    sock = conn.sock
    if sock is None:
        return True
    try:
        if hasattr(select, 'poll'):
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(0))
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


def _reason(err: BaseException, sent: bool) -> str:
    """A short, data-free description of a transport failure."""
    if isinstance(err, ssl.SSLCertVerificationError):
        return f'TLS failed: {err.verify_message or err.reason}'
    if isinstance(err, ssl.SSLError):
        return f'TLS failed: {err.reason or type(err).__name__}'
    if isinstance(err, TimeoutError):
        return 'no answer in time' if sent else 'connecting timed out'
    if isinstance(err, http.client.RemoteDisconnected):
        return 'connection broken: closed without an answer'
    if isinstance(err, http.client.HTTPException):
        return f'connection broken: not HTTP ({type(err).__name__})'
    if isinstance(err, OSError):
        what = 'connection broken' if sent else 'cannot connect'
        return f'{what}: {err.strerror or type(err).__name__}'
    return type(err).__name__


class Transport:
    """HTTP/1.1 requests to one OPA over a shared keep-alive pool.

    Connections are Python's own ``http.client`` ones (headers and body
    leave in one packet), kept in a LIFO pool shared by all threads:
    at most ``max_connections`` idle ones are kept, more concurrent
    requests open more connections, closed after use.  An idle
    connection the server closed is noticed before reuse and replaced.

    :param url: ``http://host:port[/base]``, ``https://...`` or
        ``unix:///path/to/opa.sock``.
    :raises PolicyLoadError: a bad URL, or TLS files that do not load.
    """

    def __init__(
        self,
        url: str,
        connect_timeout: float = DEFAULTS['opa_connect_timeout'],
        read_timeout: float = DEFAULTS['opa_read_timeout'],
        retries: int = DEFAULTS['opa_retries'],
        max_connections: int = DEFAULTS['opa_max_connections'],
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        tls_verify: bool = True,
    ) -> None:
        self.url = url
        self.connect_timeout = float(connect_timeout)
        self.read_timeout = float(read_timeout)
        # Only failures before the request was sent are retried.
        self.retries = max(0, min(int(retries), MAX_RETRIES))
        self.max_connections = max(1, int(max_connections))
        self.num_connections = 0  # opened so far
        # Idle connections found closed by the server (an OPA restart).
        self.num_dropped = 0
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._closed = False
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme.lower()
        if any((ca_file, cert_file, key_file)) and scheme != 'https':
            raise PolicyLoadError(
                f'[oslo_opa] opa_url = {url!r}: TLS files are set but the '
                f'URL is not https://'
            )
        self.base_path = ''
        if scheme == 'unix':
            path = urllib.parse.unquote(parts.path or '')
            if parts.netloc or not path.startswith('/'):
                raise PolicyLoadError(
                    f'[oslo_opa] opa_url = {url!r}: a unix socket URL is '
                    f'unix:///absolute/path.sock'
                )
            self._new = lambda t: _UnixConnection(path, t)
            return
        if scheme not in ('http', 'https') or not parts.hostname:
            raise PolicyLoadError(
                f'[oslo_opa] opa_url = {url!r}: expected http://host:port, '
                f'https://host:port or unix:///path.sock'
            )
        try:
            port = parts.port
        except ValueError as e:
            raise PolicyLoadError(
                f'[oslo_opa] opa_url = {url!r}: bad port'
            ) from e
        self.base_path = parts.path.rstrip('/')
        host = parts.hostname
        if scheme == 'http':
            self._new = lambda t: http.client.HTTPConnection(
                host, port or 80, timeout=t
            )
            return
        context = _tls_context(ca_file, cert_file, key_file, tls_verify)
        self._new = lambda t: http.client.HTTPSConnection(
            host, port or 443, timeout=t, context=context
        )

    def _checkout(self) -> http.client.HTTPConnection | None:
        while True:
            with self._lock:
                if not self._idle:
                    return None
                conn = self._idle.pop()
            if not _dropped(conn):
                return conn
            conn.close()
            with self._lock:
                self.num_dropped += 1

    def _checkin(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self.max_connections:
                self._idle.append(conn)
                return
        conn.close()

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        timeout: tuple[float, float] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """(status, body) of one request; path starts with ``/``.

        :param timeout: (connect, read) seconds; the read timeout bounds
            each wait for data from OPA.
        :raises TransportError: no HTTP answer (the message has no data).
        """
        connect_timeout, read_timeout = timeout or (
            self.connect_timeout,
            self.read_timeout,
        )
        headers = _JSON_HEADERS if headers is None else headers
        attempt = 0
        while True:
            if self._closed:
                raise TransportError('the connection pool is closed')
            conn = self._checkout()
            if conn is None:
                conn = self._new(connect_timeout)
                with self._lock:
                    self.num_connections += 1
                try:
                    conn.connect()
                except OSError as e:
                    # Refused, no socket file, or timed out: nothing sent.
                    conn.close()
                    retry = isinstance(
                        e, (ConnectionRefusedError, FileNotFoundError,
                            TimeoutError)
                    ) and not isinstance(e, ssl.SSLError)  # fmt: skip
                    if retry and attempt < self.retries:
                        attempt += 1
                        continue
                    raise TransportError(_reason(e, sent=False)) from e
            try:
                conn.sock.settimeout(read_timeout)
                conn.request(method, self.base_path + path, body, headers)
            except OSError as e:
                # Not (entirely) sent: OPA cannot have acted on it.
                conn.close()
                if attempt < self.retries and not isinstance(
                    e, (TimeoutError, ssl.SSLError)
                ):
                    attempt += 1
                    continue
                raise TransportError(_reason(e, sent=True)) from e
            try:
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                raise TransportError(_reason(e, sent=True)) from e
            if resp.will_close:
                conn.close()
            else:
                self._checkin(conn)
            return resp.status, data

    def close(self) -> None:
        """Close idle connections; busy ones close when they finish."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def _tls_context(
    ca_file: str | None,
    cert_file: str | None,
    key_file: str | None,
    verify: bool,
) -> ssl.SSLContext:
    if key_file and not cert_file:
        raise PolicyLoadError(
            '[oslo_opa] opa_key_file is set without opa_cert_file'
        )
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    try:
        if not verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif ca_file:
            context.load_verify_locations(cafile=ca_file)
        if cert_file:
            context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as e:
        raise PolicyLoadError(
            f'[oslo_opa] opa_ca_file={ca_file!r}, opa_cert_file='
            f'{cert_file!r}, opa_key_file={key_file!r}: cannot load: {e}'
        ) from e
    return context


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
            body = json.dumps(
                {'input': input_doc}, separators=(',', ':')
            ).encode('ascii')
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
                f'rule {rule!r}: {entry.path} is undefined in OPA (is the '
                f'policy loaded? see oslo-opa status)'
            )
        result = doc['result']
        if result is not True and result is not False:
            raise DecisionError(f'rule {rule!r}: allow is not a boolean')
        if LOG.isEnabledFor(logging.DEBUG):
            LOG.debug(
                'oslo.opa: rule %r: %s from OPA in %.2f ms (decision_id %s)',
                rule,
                'allow' if result else 'deny',
                (time.monotonic() - start) * 1e3,
                doc.get('decision_id'),
            )
        return result

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
