"""HTTP/1.1 requests to one OPA over a shared keep-alive pool.

One pool of keep-alive connections per process, shared by every thread
and greenlet (``http://``, ``https://`` with a CA bundle and an optional
client certificate, or ``unix:///path.sock``).  A request is written
whole with one ``sendall`` and its answer read by its framing alone
(``wire.py``): no ``http.client``, whose two writes per request and
generic header parsing cost about as much as OPA takes to decide (see
``tox -e bench``, section ``http``).  Connect and read timeouts bound
every request.  Failures before the request was sent (connection
refused, connect timeout, a send that failed) are retried at once,
``retries`` times; nothing is retried once the request may have
reached OPA.  Errors never carry data.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Mapping
from typing import Any

from oslo_opa.drivers import wire
from oslo_opa.errors import OsloOpaError, PolicyLoadError
from oslo_opa.opts import HTTP_DEFAULTS as DEFAULTS
from oslo_opa.opts import MAX_RETRIES

# What a decision request needs besides Host and Content-Length: OPA
# answers JSON, uncompressed unless asked for gzip.
_JSON_HEADERS = {'Content-Type': 'application/json'}
# Methods whose requests carry a body (empty when None is given).
_BODY_METHODS = frozenset({'POST', 'PUT', 'PATCH'})
# Request heads kept, by method and path (a service asks a few hundred).
_HEADS_KEPT = 4096


class TransportError(OsloOpaError):
    """No HTTP answer from OPA; the message says why, never with data."""


class _Connection:
    """One connected socket and what the pool knows of it."""

    __slots__ = ('poller', 'sock', 'timeout')

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.timeout = sock.gettimeout()
        self.poller: Any = None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def _dropped(conn: _Connection) -> bool:
    """Whether an idle keep-alive connection was closed by the server.

    An idle connection has nothing to read: readable means EOF, a reset
    or bytes nobody asked for.  poll() where there is one (select() only
    takes descriptors below 1024; eventlet removes poll()), registered
    once per connection.
    """
    try:
        if hasattr(select, 'poll'):
            if conn.poller is None:
                conn.poller = select.poll()
                conn.poller.register(conn.sock, select.POLLIN)
            return bool(conn.poller.poll(0))
        return bool(select.select([conn.sock], [], [], 0)[0])
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
    if isinstance(err, wire.ClosedEarly):
        return f'connection broken: {err}'
    if isinstance(err, wire.NotHttp):
        return f'connection broken: not HTTP ({err})'
    if isinstance(err, OSError):
        what = 'connection broken' if sent else 'cannot connect'
        return f'{what}: {err.strerror or type(err).__name__}'
    return type(err).__name__


class Transport:
    """HTTP/1.1 requests to one OPA over a shared keep-alive pool.

    Connections are plain sockets (TLS-wrapped for ``https://``), kept
    in a LIFO pool shared by all threads: at most ``max_connections``
    idle ones are kept, more concurrent requests open more connections,
    closed after use.  An idle connection the server closed is noticed
    before reuse and replaced.

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
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        self._heads: dict[tuple, bytes] = {}
        self._unix_path: str | None = None
        self._address: tuple[str, int] = ('', 0)
        self._tls: ssl.SSLContext | None = None
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
            self._unix_path = path
            self._host = 'localhost'
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
        default_port = 80 if scheme == 'http' else 443
        self._address = (parts.hostname, port or default_port)
        self._host = wire.host_header(parts.hostname, port, default_port)
        if scheme == 'https':
            self._tls = _tls_context(ca_file, cert_file, key_file, tls_verify)

    def _connect(self, timeout: float) -> _Connection:
        """A new connection (TLS handshake included).

        :raises OSError: refused, no socket file, timed out, TLS failed.
        """
        if self._unix_path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.connect(self._unix_path)
            except BaseException:
                sock.close()
                raise
            return _Connection(sock)
        sock = socket.create_connection(self._address, timeout)
        try:
            # The request leaves as one write: never wait to send it.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is not None:
                sock = self._tls.wrap_socket(
                    sock, server_hostname=self._address[0]
                )
        except BaseException:
            sock.close()
            raise
        return _Connection(sock)

    def _checkout(self) -> _Connection | None:
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

    def _checkin(self, conn: _Connection) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self.max_connections:
                self._idle.append(conn)
                return
        conn.close()

    def _message(
        self,
        method: str,
        path: str,
        body: bytes | None,
        headers: Mapping[str, str] | None,
    ) -> bytes:
        """The request's bytes; its head built once per method and path."""
        key = (
            method,
            path,
            None if headers is None else tuple(headers.items()),
        )
        head = self._heads.get(key)
        if head is None:
            head = wire.request_head(
                method,
                self.base_path + path,
                self._host,
                _JSON_HEADERS if headers is None else headers,
            )
            if len(self._heads) >= _HEADS_KEPT:
                self._heads.clear()
            self._heads[key] = head
        if body is None and method in _BODY_METHODS:
            body = b''
        return wire.message(head, body)

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
        :raises ValueError: the path or a header is not valid in HTTP.
        """
        connect_timeout, read_timeout = timeout or (
            self.connect_timeout,
            self.read_timeout,
        )
        method = method.upper()
        data = self._message(method, path, body, headers)
        attempt = 0
        while True:
            if self._closed:
                raise TransportError('the connection pool is closed')
            conn = self._checkout()
            if conn is None:
                with self._lock:
                    self.num_connections += 1
                try:
                    conn = self._connect(connect_timeout)
                except OSError as e:
                    # Refused, no socket file, or timed out: nothing sent.
                    retry = isinstance(
                        e, (ConnectionRefusedError, FileNotFoundError,
                            TimeoutError)
                    ) and not isinstance(e, ssl.SSLError)  # fmt: skip
                    if retry and attempt < self.retries:
                        attempt += 1
                        continue
                    raise TransportError(_reason(e, sent=False)) from e
            sock = conn.sock
            try:
                if conn.timeout != read_timeout:
                    sock.settimeout(read_timeout)
                    conn.timeout = read_timeout
                sock.sendall(data)
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
                status, answer, reusable = wire.read_answer(sock, method)
            except (OSError, wire.NotHttp) as e:
                conn.close()
                raise TransportError(_reason(e, sent=True)) from e
            if reusable:
                self._checkin(conn)
            else:
                conn.close()
            return status, answer

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
