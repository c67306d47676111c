"""Replacing a file atomically: a reader (OPA, a polling worker, a
person) sees the old file or the new one, never half of one."""

from __future__ import annotations

import os
import tempfile


def write_file(
    path: str,
    data: bytes,
    mode: int = 0o644,
    sync: bool = False,
    prefix: str = '.oslo-opa-',
) -> None:
    """Replace path with data: written beside it (a file named prefix...),
    then renamed.  sync: on disk before the rename makes it current
    (what a restart relies on)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=prefix, dir=directory)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
