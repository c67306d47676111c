"""Downloading a bundle from a bundle server, as OPA's bundle plugin does.

``GET <bundle_url>`` with ``If-None-Match: <etag>`` of the bundle we hold:
``304 Not Modified`` costs the server nothing, ``200`` brings a new
``.tar.gz``.  A download is bounded in size (a gzip bomb is refused while
it is read, not after) and in total time (a server sending a byte a
second would otherwise hold the poller forever: ``requests``' read
timeout is per read).  The tarball is read into memory, by name: only
regular files under relative paths, each once, as OPA accepts them.
Nothing here decides whether the bundle is good (``bundle_check.py``).
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import posixpath
import tarfile
import time
from collections.abc import Iterator

import requests

from oslo_opa.errors import OsloOpaError

# Far above any conversion (neutron with its prebuilt fast bundles is a
# few MiB) and far below what would hurt a worker.
MAX_BYTES = 256 * 1024 * 1024
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0
# A whole download, however slowly the bytes come.
TOTAL_TIMEOUT = 120.0
_CHUNK = 64 * 1024


class FetchError(OsloOpaError):
    """No bundle could be had; the message says why (not the body)."""


@dataclasses.dataclass(frozen=True)
class Download:
    """What a GET brought: raw is None when the server said 304."""

    raw: bytes | None
    etag: str | None


class Fetcher:
    """GETs one bundle URL with ``If-None-Match``; one per poller."""

    def __init__(
        self,
        url: str,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
        total_timeout: float = TOTAL_TIMEOUT,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        self.url = url
        self.timeout = (connect_timeout, read_timeout)
        self.total_timeout = total_timeout
        self.max_bytes = max_bytes
        self._session: requests.Session | None = None

    def get(self, etag: str | None = None) -> Download:
        """The bundle, or ``Download(None, etag)`` when unchanged.

        :raises FetchError: unreachable, an HTTP error, too big, too slow.
        """
        headers = {'Accept': 'application/gzip, application/octet-stream'}
        if etag:
            headers['If-None-Match'] = etag
        if self._session is None:
            self._session = requests.Session()
        deadline = time.monotonic() + self.total_timeout
        try:
            with self._session.get(
                self.url, headers=headers, timeout=self.timeout, stream=True
            ) as resp:
                if resp.status_code == 304:
                    return Download(None, resp.headers.get('ETag') or etag)
                if resp.status_code != 200:
                    raise FetchError(f'the server answered {resp.status_code}')
                declared = resp.headers.get('Content-Length')
                if declared and declared.isdigit():
                    self._bounded(int(declared))
                body = bytearray()
                for chunk in _chunks(resp):
                    body += chunk
                    self._bounded(len(body))
                    if time.monotonic() > deadline:
                        raise FetchError(
                            f'the download took longer than '
                            f'{self.total_timeout:.0f} s'
                        )
                return Download(bytes(body), resp.headers.get('ETag'))
        except requests.RequestException as e:
            # A fresh connection next time: this one may be half-read.
            self.close()
            raise FetchError(f'{type(e).__name__}: {_short(e)}') from e
        except FetchError:
            self.close()
            raise

    def _bounded(self, size: int) -> None:
        if size > self.max_bytes:
            raise FetchError(
                f'the bundle is larger than {self.max_bytes} bytes'
            )

    def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.close()


def _chunks(resp: requests.Response) -> Iterator[bytes]:
    """The body as it arrives: one socket read per chunk (urllib3 2's
    read1), so the deadline is checked however slowly bytes come;
    iter_content waits to fill a whole chunk."""
    read1 = getattr(resp.raw, 'read1', None)
    if read1 is None:
        yield from resp.iter_content(1024)
        return
    while True:
        chunk = read1(_CHUNK)
        if not chunk:
            return
        yield chunk


def _short(err: Exception) -> str:
    # urllib3's messages nest the pool and its repr; the first line is
    # what an operator reads.
    text = str(err).splitlines()[0] if str(err) else ''
    return text[:300]


def read_tarball(raw: bytes, max_bytes: int = MAX_BYTES) -> dict[str, bytes]:
    """A ``.tar.gz`` bundle's files: name (relative, ``/``) -> content.

    :raises FetchError: not a gzipped tarball, a link, a device, a path
        leaving the bundle, a name given twice, more than max_bytes.
    """
    files: dict[str, bytes] = {}
    total = 0
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as gz:
            with tarfile.open(fileobj=gz, mode='r|') as tar:
                for member in tar:
                    if member.isdir():
                        continue
                    name = _name(member.name)
                    if not member.isreg():
                        raise FetchError(f'{name}: not a regular file')
                    if name in files:
                        raise FetchError(f'{name}: in the bundle twice')
                    total += member.size
                    if total > max_bytes:
                        raise FetchError(
                            f'the bundle unpacks to more than {max_bytes} '
                            f'bytes'
                        )
                    f = tar.extractfile(member)
                    files[name] = f.read() if f is not None else b''
    except (OSError, EOFError, tarfile.TarError) as e:
        raise FetchError(f'not a gzipped tarball: {e}') from e
    if not files:
        raise FetchError('an empty bundle')
    return files


def _name(raw_name: str) -> str:
    """OPA's name for a member: relative, ``/``-separated, no ``..``."""
    name = posixpath.normpath('/' + raw_name.replace('\\', '/')).lstrip('/')
    parts = raw_name.replace('\\', '/').split('/')
    if not name or name == '.' or '..' in parts:
        raise FetchError(f'{raw_name!r}: not a path inside the bundle')
    return name
