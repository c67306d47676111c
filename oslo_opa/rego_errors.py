"""regopy's error reports as lines a person can act on.

regopy raises its compile errors as s-expressions that locate each error
by a byte offset into the module (``(error 46:nova/x.rego|767|2
(errormsg 16:this is unclosed) ...)``).  :func:`messages` turns them into
``file:row:col: message``, as OPA writes its own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_ERROR_AT = re.compile(r'\(error(?![a-z])(?: ([0-9]+):)?')
_ERROR_MSG = re.compile(r'\(errormsg ([0-9]+):')
_ERROR_POS = re.compile(r'\|([0-9]+)\|')
# What is shown of a report this module cannot read.
_RAW_LIMIT = 500


def position(text: str, offset: int) -> tuple[int, int]:
    """(row, column), from 1, of a character offset into text."""
    row = text.count('\n', 0, offset) + 1
    return row, offset - (text.rfind('\n', 0, offset) + 1) + 1


def messages(raw: str, texts: Mapping[str, str]) -> list[str]:
    """Each error in raw as ``file:row:col: message``.

    :param raw: regopy's report (a ``RegoError``'s text, or a bundle's
        error node).
    :param texts: the modules compiled, name -> text, to turn byte
        offsets into rows and columns.
    """
    found = list(_ERROR_AT.finditer(raw))
    out = []
    for n, m in enumerate(found):
        stop = found[n + 1].start() if n + 1 < len(found) else len(raw)
        msg = _ERROR_MSG.search(raw, m.end(), stop)
        if msg is None:
            continue
        size = int(msg.group(1))
        text = raw[msg.end() : msg.end() + size]
        if raw[msg.end() + size : msg.end() + size + 1] != ')':
            text = raw[msg.end() : raw.find(')', msg.end())]
        where = ''
        if m.group(1):
            name = raw[m.end() : m.end() + int(m.group(1))]
            pos = _ERROR_POS.match(raw, m.end() + len(name))
            if name in texts and pos:
                source = texts[name].encode('utf-8')[: int(pos.group(1))]
                offset = len(source.decode('utf-8', 'ignore'))
                row, col = position(texts[name], offset)
                where = f'{name}:{row}:{col}: '
            else:
                where = f'{name}: '
        out.append(where + text)
    if not out and raw.strip():
        out.append(raw.strip()[:_RAW_LIMIT])
    return out


def summary(raw: str, texts: Mapping[str, str], limit: int = 3) -> str:
    """The first errors of raw on one line (see :func:`messages`)."""
    found = messages(raw, texts)
    text = '; '.join(found[:limit])
    if len(found) > limit:
        text += f' (and {len(found) - limit} more)'
    return ' '.join(text.split())


def first(raw: str, texts: Mapping[str, str]) -> str | None:
    """The first error of raw on one line, or None."""
    found = messages(raw, texts)
    return ' '.join(found[0].split()) if found else None
