"""The bundle cache directory (``[oslo_opa] bundle_cache_dir``).

Layout, shared by every worker of a host that names the same directory::

    active.json              the last activated bundle: its tarball,
                             ETag, revisions, URL, when (the pointer)
    bundle-<sha256>.tar.gz   activated bundles, as downloaded
    r-<sha256[:32]>/         each written out as a converted directory
    status/<pid>.json        each process's view (bundle_status)

Nothing is ever changed in place: a tarball and a directory are written
under a temporary name and renamed (a directory holding another content
is never reused), and ``active.json`` is replaced in one ``rename`` only
after the bundle was activated.  So a crash, a full disk or two workers
writing at once leave either the old pointer or the new one, each naming
complete files.  A restarted worker reads the pointer, checks the tarball
again (signature, roots: the key may have changed, the disk may lie) and
writes it out again if its directory is not exactly it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from typing import Any

from oslo_opa import atomic

POINTER = 'active.json'
# Files and directories being written; left by a crash, pruned.
TMP_PREFIX = '.tmp-'
STATUS_DIR = 'status'
# Revisions kept on disk: a worker that has not polled yet may still
# load prebuilt fast bundles from its directory.
KEEP = 3


def digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


class BundleStore:
    """Persists activated bundles under one cache directory."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def _path(self, *names: str) -> str:
        return os.path.join(self.directory, *names)

    def pointer(self) -> dict[str, Any] | None:
        """What ``active.json`` says, or None (none, unreadable)."""
        try:
            with open(self._path(POINTER), encoding='utf-8') as f:
                doc = json.load(f)
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    def tarball(self, sha: str) -> bytes:
        """The persisted tarball of sha256 sha.

        :raises OSError: absent, unreadable, not what its name says.
        """
        with open(self._path(f'bundle-{sha}.tar.gz'), 'rb') as f:
            raw = f.read()
        if digest(raw) != sha:
            raise OSError(f'bundle-{sha}.tar.gz: its content changed')
        return raw

    def write_out(self, sha: str, files: Mapping[str, bytes]) -> str:
        """A directory holding exactly files (the converted directory of
        bundle sha): the existing one if it does, else a new one."""
        os.makedirs(self.directory, exist_ok=True)
        target = self._path(f'r-{sha[:32]}')
        if _holds(target, files):
            return target
        tmp = tempfile.mkdtemp(prefix=TMP_PREFIX, dir=self.directory)
        try:
            for name, content in files.items():
                path = os.path.join(tmp, *name.split('/'))
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, 'wb') as f:
                    f.write(content)
            try:
                os.rename(tmp, target)
                return target
            except OSError:
                # Another worker wrote it meanwhile, or a damaged one is
                # in the way: ours, under its own name, is as good.
                if _holds(target, files):
                    shutil.rmtree(tmp, ignore_errors=True)
                    return target
                mine = f'{target}-{os.getpid()}-{os.path.basename(tmp)}'
                os.rename(tmp, mine)
                return mine
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def commit(self, raw: bytes, info: Mapping[str, Any]) -> None:
        """Persist raw as the active bundle (pointer last), then drop
        revisions beyond :data:`KEEP`.

        :raises OSError: it could not be written (the old pointer stays).
        """
        sha = digest(raw)
        name = f'bundle-{sha}.tar.gz'
        if not os.path.exists(self._path(name)):
            _write_atomic(self._path(name), raw)
        previous = self.pointer() or {}
        history = [sha] + [s for s in previous.get('history', []) if s != sha][
            : KEEP - 1
        ]
        doc = {**info, 'sha256': sha, 'history': history}
        _write_atomic(
            self._path(POINTER),
            json.dumps(doc, indent=1, sort_keys=True).encode('utf-8'),
        )
        self._prune(set(history))

    def _prune(self, kept: set[str]) -> None:
        for entry in os.listdir(self.directory):
            if entry.startswith('bundle-') and entry.endswith('.tar.gz'):
                sha = entry[len('bundle-') : -len('.tar.gz')]
                if sha not in kept:
                    _unlink(self._path(entry))
            elif entry.startswith('r-'):
                if not any(entry[2:].startswith(s[:32]) for s in kept):
                    shutil.rmtree(self._path(entry), ignore_errors=True)
            elif entry.startswith(TMP_PREFIX):
                path = self._path(entry)
                # Another worker's write in progress is young; a crashed
                # one's is not.
                try:
                    old = time.time() - os.stat(path).st_mtime > 3600
                except OSError:
                    old = False
                if old:
                    shutil.rmtree(path, ignore_errors=True)

    def write_status(self, doc: Mapping[str, Any]) -> None:
        """This process's status file (best effort: never raises)."""
        try:
            os.makedirs(self._path(STATUS_DIR), exist_ok=True)
            _write_atomic(
                self._path(STATUS_DIR, f'{os.getpid()}.json'),
                json.dumps(doc, indent=1, sort_keys=True).encode('utf-8'),
                sync=False,  # advisory, rewritten at every poll
            )
        except OSError:
            pass

    def remove_status(self) -> None:
        _unlink(self._path(STATUS_DIR, f'{os.getpid()}.json'))


def _holds(directory: str, files: Mapping[str, bytes]) -> bool:
    """Whether directory holds exactly files, byte for byte."""
    if not os.path.isdir(directory):
        return False
    seen = 0
    for root, _dirs, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, directory).replace(os.sep, '/')
            try:
                with open(path, 'rb') as f:
                    if f.read() != files.get(rel):
                        return False
            except OSError:
                return False
            seen += 1
    return seen == len(files)


def _write_atomic(path: str, content: bytes, sync: bool = True) -> None:
    # '.tmp-': what _prune clears after a crash mid-write.
    atomic.write_file(path, content, sync=sync, prefix=TMP_PREFIX)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
