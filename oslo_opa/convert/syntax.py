"""Rego text from policy text: literals, comments, ``%`` formats.

Everything a policy file says reaches a module through these functions,
which is what keeps generated Rego data-safe.
"""

from __future__ import annotations

import ast
import base64
import dataclasses
import json
import re
import warnings
from collections.abc import Iterable

from oslo_opa.convert.naming import KEYWORDS
from oslo_opa.errors import ConversionError


def rego_string(s: str) -> str:
    """A Rego term equal to s in both OPA and regopy, safe to embed.

    Printable ASCII without quotes or backslashes is written as a plain
    literal.  Anything else goes through ``base64.decode``: regopy does
    not unescape ``\\"`` in literals, and no text from a policy file can
    reach the module unencoded.
    """
    if all(' ' <= c <= '~' and c not in '"\\' for c in s):
        return f'"{s}"'
    try:
        raw = s.encode('utf-8')
    except UnicodeEncodeError as e:
        raise ConversionError(f'{s!r} is not valid Unicode text') from e
    return f'base64.decode("{base64.b64encode(raw).decode("ascii")}")'


_IDENT = re.compile(r'[A-Za-z_][A-Za-z0-9_]*\Z')


def ref(base: str, key: str) -> str:
    """base[key] as opa fmt writes it: a dot for identifier keys."""
    if _IDENT.match(key) and key not in KEYWORDS:
        return f'{base}.{key}'
    return f'{base}[{rego_string(key)}]'


def comment(text: str) -> str:
    # json.dumps with ensure_ascii escapes newlines and every non-ASCII
    # character, so a comment can never end early.
    return json.dumps(text, ensure_ascii=True)


# --- %(key)s substitution -------------------------------------------------


@dataclasses.dataclass
class Format:
    """A check's match parsed as Python's ``match % target``.

    :ivar parts: literal strings and ``('key', k)`` tuples, in order.
    :ivar unsupported: a conversion other than ``%(key)s`` or ``%%``
        follows the parts (Python raises or prints repr(); the converted
        check denies once the keys before it are present).
    """

    parts: list[str | tuple[str, str]]
    unsupported: str | None = None

    @property
    def keys(self) -> list[str]:
        return [p[1] for p in self.parts if isinstance(p, tuple)]

    @property
    def static(self) -> str | None:
        """The text when there is nothing to substitute."""
        if self.unsupported is None and not self.keys:
            return ''.join(p for p in self.parts if isinstance(p, str))
        return None


def parse_format(match: str) -> Format:
    """Split match the way ``str.__mod__`` reads it with a mapping."""
    parts: list[str | tuple[str, str]] = []
    text: list[str] = []
    i, n = 0, len(match)
    while i < n:
        c = match[i]
        if c != '%':
            text.append(c)
            i += 1
            continue
        if match.startswith('%%', i):
            text.append('%')
            i += 2
            continue
        if match.startswith('%(', i):
            # Python counts nested parentheses inside the key.
            depth, j = 1, i + 2
            while j < n and depth:
                if match[j] == '(':
                    depth += 1
                elif match[j] == ')':
                    depth -= 1
                j += 1
            if depth == 0 and j < n and match[j] == 's':
                if text:
                    parts.append(''.join(text))
                    text = []
                parts.append(('key', match[i + 2 : j - 1]))
                i = j + 1
                continue
        if text:
            parts.append(''.join(text))
        fmt = Format(parts, unsupported=match[i:])
        if match.startswith('%(', i) and depth == 0:
            # Python looks the key up before it converts: a missing one
            # is a KeyError (the check is False) even here.
            fmt.parts.append(('key', match[i + 2 : j - 1]))
        return fmt
    if text:
        parts.append(''.join(text))
    return Format(parts)


def parts_term(parts: Iterable[str | tuple[str, str]]) -> str:
    terms = []
    for p in parts:
        if isinstance(p, tuple):
            terms.append('{"key": %s}' % rego_string(p[1]))
        else:
            terms.append(rego_string(p))
    return '[%s]' % ', '.join(terms)


def try_literal(kind: str) -> tuple[bool, str | None]:
    """How oslo.policy's GenericCheck reads kind with ast.literal_eval.

    (True, str(value)) for a literal; (True, None) when literal_eval
    raises ValueError (kind is a credentials path); (False, None) when it
    raises anything else (oslo.policy lets that escape: the check raises).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            return True, str(ast.literal_eval(kind))
    except ValueError:
        return True, None
    except Exception:  # noqa: BLE001 - oslo.policy lets it raise
        return False, None
