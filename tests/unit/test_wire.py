"""HTTP/1.1 framing of the http driver's transport, on real sockets.

The peer is the other end of a socketpair (or a listening socket), fed
bytes as a server would send them, split anywhere: the answer must be
read by its framing whatever the packets, and anything that is not an
HTTP/1.x answer must fail at once with a message that carries none of
the bytes.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from oslo_opa.drivers import transport as transport_mod
from oslo_opa.drivers import wire
from oslo_opa.drivers.transport import Transport, TransportError

OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n'


def _answer(raw: bytes, method: str = 'POST', pieces: int = 1, close=False):
    """read_answer on a socket whose peer sends raw in pieces."""
    ours, peer = socket.socketpair()
    ours.settimeout(2.0)
    step = max(1, -(-len(raw) // pieces))

    def feed():
        for i in range(0, len(raw), step):
            peer.sendall(raw[i : i + step])
            time.sleep(0.005)
        if close:
            peer.close()

    t = threading.Thread(target=feed, daemon=True)
    t.start()
    try:
        return wire.read_answer(ours, method)
    finally:
        t.join(5)
        ours.close()
        peer.close()


@pytest.mark.parametrize('pieces', [1, 3, 40])
def test_content_length_whatever_the_packets(pieces):
    raw = OK + b'Content-Length: 17\r\n\r\n{"result":false}\n'
    assert _answer(raw, pieces=pieces) == (200, b'{"result":false}\n', True)


@pytest.mark.parametrize('pieces', [1, 5, 60])
def test_chunked_with_extensions_and_trailers(pieces):
    raw = (
        b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n'
        b'7;name=x\r\n{"resul\r\n'
        b'A\r\nt":[1,2,3]\r\n'
        b'1\r\n}\r\n'
        b'0\r\nX-Trailer: y\r\n\r\n'
    )
    assert _answer(raw, pieces=pieces) == (200, b'{"result":[1,2,3]}', True)


def test_chunked_wins_over_content_length():
    raw = (
        b'HTTP/1.1 200 OK\r\nContent-Length: 3\r\n'
        b'Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n'
    )
    assert _answer(raw) == (200, b'ok', True)


@pytest.mark.parametrize(
    ('head', 'reusable'),
    [
        (b'HTTP/1.1 200 OK\r\nConnection: close\r\n', False),
        (b'HTTP/1.1 200 OK\r\nConnection: Keep-Alive, Close\r\n', False),
        (b'HTTP/1.0 200 OK\r\n', False),
        (b'HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n', True),
        (b'HTTP/1.1 200 OK\r\n', True),
    ],
)
def test_whether_the_connection_stays_open(head, reusable):
    raw = head + b'Content-Length: 2\r\n\r\nok'
    assert _answer(raw) == (200, b'ok', reusable)


def test_no_framing_reads_until_the_peer_closes():
    raw = b'HTTP/1.1 200 OK\r\n\r\n{"result":true}'
    assert _answer(raw, pieces=3, close=True) == (
        200,
        b'{"result":true}',
        False,
    )


def test_other_transfer_coding_last_reads_until_close():
    raw = b'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxyz'
    assert _answer(raw, close=True) == (200, b'xyz', False)


def test_interim_answers_are_skipped():
    raw = (
        b'HTTP/1.1 100 Continue\r\n\r\n' + OK + b'Content-Length: 2\r\n\r\nok'
    )
    assert _answer(raw) == (200, b'ok', True)


def test_no_body_for_head_and_204():
    assert _answer(b'HTTP/1.1 204 No Content\r\n\r\n') == (204, b'', True)
    raw = OK + b'Content-Length: 40\r\n\r\n'
    assert _answer(raw, method='HEAD') == (200, b'', True)


def test_bytes_after_the_answer_mean_the_connection_is_not_reused():
    raw = OK + b'Content-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n'
    status, body, reusable = _answer(raw)
    assert (status, body, reusable) == (200, b'ok', False)


@pytest.mark.parametrize(
    ('raw', 'what'),
    [
        (b'\x00\x13garbage, not HTTP\r\n\r\n\xff', 'bad status line'),
        (b'SSH-2.0-OpenSSH_9.6\r\n', 'no HTTP status line'),
        (b'HTTP/1.1 2000 OK\r\n\r\n', 'bad status line'),
        (b'HTTP/2 200\r\n\r\n', 'bad status line'),
        (b'HTTP/1.1 200 OK\r\nno colon here\r\n\r\n', 'bad header line'),
        (
            OK + b'Content-Length: 2\r\nContent-Length: 3\r\n\r\nok',
            'bad Content-Length',
        ),
        (OK + b'Content-Length: -2\r\n\r\nok', 'bad Content-Length'),
        (
            b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n'
            b'zz\r\nok\r\n0\r\n\r\n',
            'bad chunk size',
        ),
        (
            b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n'
            b'2\r\nokXX0\r\n\r\n',
            'bad chunk end',
        ),
        (b'HTTP/1.1 101 Switching Protocols\r\n\r\n', 'switching'),
    ],
)
def test_what_is_not_http_fails_at_once_without_its_bytes(raw, what):
    start = time.monotonic()
    with pytest.raises(wire.NotHttp, match=what) as info:
        _answer(raw)
    # Not a read timeout (2 s): refused as soon as it is seen.
    assert time.monotonic() - start < 1.0
    assert 'garbage' not in str(info.value)
    assert 'OpenSSH' not in str(info.value)


def test_endless_headers_are_refused():
    raw = OK + b'X-Pad: ' + b'a' * (wire.MAX_HEAD + 10)
    with pytest.raises(wire.NotHttp, match='headers too long'):
        _answer(raw, pieces=20)


@pytest.mark.parametrize(
    ('raw', 'error'),
    [
        (b'', wire.ClosedEarly),
        (OK + b'Content-Length: 10\r\n\r\nshort', wire.ClosedEarly),
        (b'HTTP/1.1 200 OK\r\nContent-', wire.NotHttp),
        (
            b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab',
            wire.ClosedEarly,
        ),
    ],
)
def test_closed_before_the_answer_ended(raw, error):
    with pytest.raises(error):
        _answer(raw, close=True)


def test_silence_is_a_timeout():
    ours, peer = socket.socketpair()
    ours.settimeout(0.1)
    try:
        with pytest.raises(TimeoutError):
            wire.read_answer(ours, 'POST')
    finally:
        ours.close()
        peer.close()


# --- requests ----------------------------------------------------------------


def test_request_bytes():
    head = wire.request_head(
        'POST', '/v1/data/a/b?x', 'h:1', {'Content-Type': 'application/json'}
    )
    assert wire.message(head, b'{"input":{}}') == (
        b'POST /v1/data/a/b?x HTTP/1.1\r\nHost: h:1\r\n'
        b'Content-Type: application/json\r\nContent-Length: 12\r\n\r\n'
        b'{"input":{}}'
    )
    get = wire.request_head('GET', '/health', 'localhost', {})
    assert wire.message(get, None) == (
        b'GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n'
    )


@pytest.mark.parametrize(
    ('method', 'path', 'headers'),
    [
        ('POST', '/v1/data/a\r\nX-Injected: 1', {}),
        ('POST', '/v1/data/a b', {}),
        ('POST', '/v1/data/é', {}),
        ('PO ST', '/v1/data/a', {}),
        ('POST', '/v1/data/a', {'X': 'a\r\nX-Injected: 1'}),
        ('POST', '/v1/data/a', {'X Y': 'a'}),
    ],
)
def test_request_heads_cannot_be_split(method, path, headers):
    with pytest.raises(ValueError):
        wire.request_head(method, path, 'h', headers)


def test_host_header():
    assert wire.host_header('127.0.0.1', 8181, 80) == '127.0.0.1:8181'
    assert wire.host_header('opa', None, 443) == 'opa'
    assert wire.host_header('opa', 443, 443) == 'opa'
    assert wire.host_header('::1', 8181, 80) == '[::1]:8181'


# --- the transport writes each request once ----------------------------------


class _Recording:
    """A socket that records each write it is asked for."""

    def __init__(self, sock):
        self._sock = sock
        self.writes = []

    def sendall(self, data):
        self.writes.append(bytes(data))
        return self._sock.sendall(data)

    def send(self, data):
        self.writes.append(bytes(data))
        return self._sock.send(data)

    def __getattr__(self, name):
        return getattr(self._sock, name)


def test_a_request_is_one_write_and_its_connection_is_reused(tmp_path):
    path = str(tmp_path / 'opa.sock')
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    got = []

    def serve():
        conn, _ = server.accept()
        with conn:
            for _ in range(2):
                data = b''
                while b'{}' not in data:
                    data += conn.recv(65536)
                got.append(data)
                conn.sendall(OK + b'Content-Length: 2\r\n\r\nok')

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    client = Transport(f'unix://{path}')
    recorded = []
    real_connect = client._connect

    def connect(timeout):
        conn = real_connect(timeout)
        conn.sock = _Recording(conn.sock)
        recorded.append(conn.sock)
        return conn

    client._connect = connect
    try:
        for _ in range(2):
            assert client.request('POST', '/v1/data/x/allow', b'{}') == (
                200,
                b'ok',
            )
    finally:
        client.close()
        t.join(5)
        server.close()
    assert client.num_connections == 1
    assert [len(s.writes) for s in recorded] == [2]  # one per request
    assert recorded[0].writes[0] == got[0]
    assert got[0].startswith(b'POST /v1/data/x/allow HTTP/1.1\r\n')
    assert b'\r\nContent-Length: 2\r\n\r\n{}' in got[0]


def test_a_bad_path_is_refused_before_connecting():
    client = Transport('http://127.0.0.1:1')
    with pytest.raises(ValueError):
        client.request('POST', '/v1/data/x\r\nHost: elsewhere', b'{}')
    assert client.num_connections == 0


def test_errors_name_the_failure_not_the_bytes():
    err = wire.NotHttp('bad status line')
    text = transport_mod._reason(err, sent=True)
    assert text == 'connection broken: not HTTP (bad status line)'
    closed = transport_mod._reason(
        wire.ClosedEarly('closed without an answer'), sent=True
    )
    assert closed == 'connection broken: closed without an answer'
    assert issubclass(TransportError, Exception)


def test_an_answer_that_closes_is_not_reused(tmp_path):
    """Connection: close (and HTTP/1.0): the next request opens another
    connection instead of failing on a closed one."""
    path = str(tmp_path / 'opa.sock')
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(4)
    answers = [
        b'HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok',
        b'HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok',
        OK + b'Content-Length: 2\r\n\r\nok',
    ]

    def serve():
        for answer in answers:
            conn, _ = server.accept()
            with conn:
                data = b''
                while not data.endswith(b'{}'):
                    data += conn.recv(65536)
                conn.sendall(answer)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    client = Transport(f'unix://{path}', read_timeout=2.0)
    try:
        for _ in answers:
            assert client.request('POST', '/v1/data/x', b'{}') == (200, b'ok')
    finally:
        client.close()
        t.join(5)
        server.close()
    assert client.num_connections == 3
    # Never pooled, so never found closed there.
    assert client.num_dropped == 0
