"""Replacing a file atomically: a reader (OPA, a polling worker, a
person) sees the old file or the new one, never half of one."""

from __future__ import annotations

import os
import tempfile


def write_file(path: str, data: bytes, mode: int = 0o644) -> None:
    """Replace path with data: written beside it, then renamed."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix='.oslo-opa-', dir=directory)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
