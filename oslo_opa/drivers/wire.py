"""HTTP/1.1 on one connected socket: what a request and an answer are.

A request is written whole, head and body together, with one
``sendall`` (a decision's leaves in one packet, and OPA reads it in one
go); its head is built once per method and path and then reused.  An
answer is read by its framing alone (status line; ``Content-Length``,
``Transfer-Encoding: chunked`` or the end of the connection; whether
the connection stays open); any other header is skipped.  OPA's answers
to decisions are a few hundred bytes, normally read with one ``recv``.
``http.client`` wrote the head and the body separately and parsed every
header with the ``email`` package: together about a third of a
decision's time (placement over TCP: from 0.4 to 0.25 ms at p50).

Nothing here reads the clock, retries or holds a lock: the connection
pool (``transport.py``) does.  Errors never carry data from either side.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping

# An answer's status line and headers together, at most.
MAX_HEAD = 64 * 1024
# One line of a chunked body's framing, at most.
MAX_LINE = 4096
_RECV = 65536
_HEX = b'0123456789abcdef'


class NotHttp(Exception):  # noqa: N818 - the name is what it says
    """The peer's bytes are not an HTTP/1.x answer (the message names
    what is wrong, never with the bytes)."""


class ClosedEarly(ConnectionError):
    """The peer closed the connection before the answer was complete."""


def _token_ok(text: str) -> bool:
    """No spaces, controls or non-ASCII (they would break the head)."""
    return text.isascii() and all(' ' < c < '\x7f' for c in text)


def host_header(host: str, port: int | None, default_port: int) -> str:
    """The ``Host`` header for host and port (IPv6 in brackets)."""
    text = f'[{host}]' if ':' in host else host
    if port is not None and port != default_port:
        text = f'{text}:{port}'
    return text


def request_head(
    method: str, target: str, host: str, headers: Mapping[str, str]
) -> bytes:
    """A request's request line and headers, each line ending in CRLF:
    :func:`message` adds the body's length and the body.

    :raises ValueError: the method, target or a header would not be one
        token or value (a space or a line break in it, for instance).
    """
    if not (_token_ok(method) and _token_ok(target)):
        raise ValueError('the method or path is not a valid HTTP token')
    lines = [f'{method} {target} HTTP/1.1', f'Host: {host}']
    for name, value in headers.items():
        if not _token_ok(name) or not all(
            c == ' ' or ' ' < c < '\x7f' for c in value
        ):
            raise ValueError('a header is not valid in HTTP')
        lines.append(f'{name}: {value}')
    lines.append('')
    return '\r\n'.join(lines).encode('ascii')


def message(head: bytes, body: bytes | None) -> bytes:
    """head (from :func:`request_head`) and body, as sent (None: no
    body, as for a GET)."""
    if body is None:
        return head + b'\r\n'
    return b'%sContent-Length: %d\r\n\r\n%s' % (head, len(body), body)


class _Reader:
    """Bytes of one connection, past what was already parsed."""

    __slots__ = ('buf', 'sock')

    def __init__(self, sock: socket.socket, buf: bytes) -> None:
        self.sock = sock
        self.buf = bytearray(buf)

    def more(self) -> None:
        chunk = self.sock.recv(_RECV)
        if not chunk:
            raise ClosedEarly('closed before the answer ended')
        self.buf += chunk

    def line(self) -> bytes:
        start = 0
        while True:
            end = self.buf.find(b'\r\n', start)
            if end >= 0:
                break
            if len(self.buf) > MAX_LINE:
                raise NotHttp('chunk line too long')
            start = max(0, len(self.buf) - 1)
            self.more()
        out = bytes(self.buf[:end])
        del self.buf[: end + 2]
        return out

    def exactly(self, count: int) -> bytes:
        while len(self.buf) < count:
            self.more()
        out = bytes(self.buf[:count])
        del self.buf[:count]
        return out

    def to_end(self) -> bytes:
        while True:
            chunk = self.sock.recv(_RECV)
            if not chunk:
                out = bytes(self.buf)
                self.buf.clear()
                return out
            self.buf += chunk


def _head(sock: socket.socket, data: bytes) -> tuple[bytes, bytes]:
    """(head, the bytes after it) of the next answer on sock, whose
    first bytes (data) may have been read already."""
    if not data:
        data = sock.recv(_RECV)
        if not data:
            raise ClosedEarly('closed without an answer')
    end = data.find(b'\r\n\r\n')
    while end < 0:
        if not b'HTTP/'.startswith(data[:5]):
            raise NotHttp('no HTTP status line')
        if len(data) > MAX_HEAD:
            raise NotHttp('headers too long')
        chunk = sock.recv(_RECV)
        if not chunk:
            raise NotHttp('closed in the headers')
        searched = max(0, len(data) - 3)
        data += chunk
        end = data.find(b'\r\n\r\n', searched)
    return data[:end], data[end + 4 :]


def _status(line: bytes) -> tuple[int, bool]:
    """(status, HTTP/1.1) from a status line."""
    parts = line.split(b' ', 2)
    if (
        len(parts) < 2
        or parts[0] not in (b'HTTP/1.1', b'HTTP/1.0')
        or len(parts[1]) != 3
        or not parts[1].isdigit()
    ):
        raise NotHttp('bad status line')
    return int(parts[1]), parts[0] == b'HTTP/1.1'


def read_answer(sock: socket.socket, method: str) -> tuple[int, bytes, bool]:
    """(status, body, reusable) of the next answer on sock.

    reusable: the connection may carry another request (the answer was
    framed, the peer keeps it open, nothing follows it).

    :raises NotHttp: the bytes are not an HTTP/1.x answer.
    :raises ClosedEarly: the connection ended first.
    :raises OSError: from the socket (TimeoutError: no data in time).
    """
    rest = b''
    while True:
        head, rest = _head(sock, rest)
        lines = head.split(b'\r\n')
        status, http11 = _status(lines[0])
        if status >= 200 or status == 101:
            break
        # 100 Continue and other interim answers: the real one follows.
    if status == 101:
        raise NotHttp('switching protocols')
    length = coding = None
    keep = http11
    for line in lines[1:]:
        name, sep, value = line.partition(b':')
        if not sep:
            if line[:1] in (b' ', b'\t'):
                continue  # an obsolete folded line
            raise NotHttp('bad header line')
        name = name.strip().lower()
        if name == b'content-length':
            value = value.strip()
            if not value.isdigit() or (
                length is not None and int(value) != length
            ):
                raise NotHttp('bad Content-Length')
            length = int(value)
        elif name == b'transfer-encoding':
            coding = value.lower().rsplit(b',', 1)[-1].strip()
        elif name == b'connection':
            tokens = {t.strip() for t in value.lower().split(b',')}
            if b'close' in tokens:
                keep = False
            elif b'keep-alive' in tokens and not http11:
                keep = True
    chunked = coding == b'chunked'
    if coding is not None and not chunked:
        # Another coding last: the body ends with the connection.
        length, keep = None, False
    if method == 'HEAD' or status in (204, 304):
        return status, b'', keep and not rest
    if chunked:  # it wins over a Content-Length
        reader = _Reader(sock, rest)
        body = _chunked(reader)
        return status, body, keep and not reader.buf
    if length is not None:
        if len(rest) == length:
            return status, rest, keep
        reader = _Reader(sock, rest)
        body = reader.exactly(length)
        return status, body, keep and not reader.buf
    # Neither: the body is what comes until the peer closes.
    return status, _Reader(sock, rest).to_end(), False


def _chunked(reader: _Reader) -> bytes:
    parts = []
    while True:
        size_text = reader.line().split(b';', 1)[0].strip()
        if not 0 < len(size_text) <= 16 or size_text.lower().strip(_HEX):
            raise NotHttp('bad chunk size')
        size = int(size_text, 16)
        if size == 0:
            while reader.line():
                pass  # trailers, up to the empty line
            return b''.join(parts)
        parts.append(reader.exactly(size))
        if reader.exactly(2) != b'\r\n':
            raise NotHttp('bad chunk end')
