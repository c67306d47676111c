"""What the overlays say about one input, asked of regopy in one query.

The embedded engine applies overlays in two steps (see ``engine.py``):
first a query, over the overlay modules and the data alone, tells which
of the rules a decision reads (and ``"*"``) an overlay denies or grants
on the input; then the rule is decided as converted, unless one of them
is among those.

The query asks about those keys only (``deny[k]`` for a known k):
enumerating ``deny`` makes regopy evaluate every overlay rule, tens of
microseconds each, and a decision needs a handful of keys.  It answers
with their positions in the lists it was given: regopy prints a string
that came from an input or a data document as it is, quotes and
newlines included, so strings cannot always be read back.  The reasons
(for people, never for a decision) come base64-encoded for that reason.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from typing import Any

from oslo_opa.convert.syntax import rego_string

PACKAGE = 'oslo_opa.embedded_overlay'
FILE = 'oslo_opa/embedded_overlay.rego'
VERDICTS = PACKAGE.replace('.', '/') + '/verdicts'
REASONS = PACKAGE.replace('.', '/') + '/reasons'


def _positions(kind: str, keys: str) -> list[str]:
    """The comprehension giving the positions of keys with a reason.
    (A key with no reason may be an empty set in regopy: count().)"""
    return [
        '\t[i |',
        '\t\tsome i',
        f'\t\tk := {keys}[i]',
        f'\t\tcount(data.oslo_opa.overlay.{kind}[k]) > 0',
        '\t],',
    ]


def verdicts_module(denies: Sequence[str], grants: Sequence[str]) -> str:
    """The query module: which of denies hold a deny reason, and which
    of grants a grant reason, as positions in each."""
    return '\n'.join(
        [
            f'package {PACKAGE}',
            '',
            f'denies := [{", ".join(rego_string(k) for k in denies)}]',
            '',
            f'grants := [{", ".join(rego_string(k) for k in grants)}]',
            '',
            'verdicts := [',
            *_positions('deny', 'denies'),
            *_positions('grant', 'grants'),
            ']',
            '',
        ]
    )


def _reasons(kind: str) -> list[str]:
    return [
        f'\t"{kind}": {{base64.encode(k): texts |',
        '\t\tsome k',
        f'\t\tr := data.oslo_opa.overlay.{kind}[k]',
        '\t\tcount(r) > 0',
        '\t\ttexts := [_text(x) | some x in r]',
        '\t},',
    ]


# Every deny and grant reason on the input: kind -> rule -> reasons.
REASONS_MODULE = '\n'.join(
    [
        f'package {PACKAGE}',
        '',
        'reasons := {',
        *_reasons('deny'),
        *_reasons('grant'),
        '}',
        '',
        '_text(x) := base64.encode(x) if is_string(x)',
        '',
        'else := base64.encode("(a reason that is not a string)")',
        '',
    ]
)


def parse_verdicts(
    text: str, denies: Sequence[str], grants: Sequence[str]
) -> tuple[frozenset[str], frozenset[str]] | None:
    """(denied, granted) keys from the verdicts query's result text;
    None when it is not the expected answer."""
    try:
        denied, granted = json.loads(text)['expressions'][0]
        return (
            frozenset(denies[i] for i in denied),
            frozenset(grants[i] for i in granted),
        )
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def _decode(text: Any) -> str:
    if not isinstance(text, str):
        raise TypeError(text)
    return base64.b64decode(text, validate=True).decode('utf-8')


def parse_reasons(text: str) -> dict[str, dict[str, list[str]]] | None:
    """kind ("deny", "grant") -> rule name -> reasons, from the reasons
    query's result text; None when it is not the expected answer."""
    try:
        value = json.loads(text)['expressions'][0]
        return {
            kind: {
                _decode(name): sorted(_decode(r) for r in reasons)
                for name, reasons in value[kind].items()
            }
            for kind in ('deny', 'grant')
        }
    except (
        ValueError,
        KeyError,
        IndexError,
        TypeError,
        AttributeError,
        binascii.Error,
    ):
        return None
