"""HTTP/1.1 requests to one OPA over a shared keep-alive pool.

One pool of keep-alive connections per process, shared by every thread
and greenlet (``http://``, ``https://`` with a CA bundle and an optional
client certificate, or ``unix:///path.sock``).  The connections are
Python's ``http.client`` ones: a request is one packet out and one back,
and the client costs about a third of what ``requests.Session`` costs
per call (which is as much as OPA takes to decide; see ``tox -e
bench``).  Connect and read timeouts bound every request.  Failures
before the request was sent (connection refused, connect timeout, a
send that failed) are retried at once, ``retries`` times; nothing is
retried once the request may have reached OPA.  Errors never carry
data.
"""

from __future__ import annotations

import http.client
import select
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Mapping

from oslo_opa.errors import OsloOpaError, PolicyLoadError
from oslo_opa.opts import HTTP_DEFAULTS as DEFAULTS
from oslo_opa.opts import MAX_RETRIES

_JSON_HEADERS = {
    'Content-Type': 'application/json',
    'Accept': 'application/json',
}


class TransportError(OsloOpaError):
    """No HTTP answer from OPA; the message says why, never with data."""


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
