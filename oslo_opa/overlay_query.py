"""What the overlays say about one input, asked of regopy in one query.

The embedded engine applies overlays in two steps (see ``engine.py``):
first this query, over the overlay modules and the data alone, names the
rules an overlay denies or grants on the input; then the rule is decided
as converted, unless a rule it reads is among them.

regopy prints a string that came from an input or a data document as it
is, quotes and newlines included, so its text cannot always be parsed
back.  The query answers with the names (and reasons) base64-encoded:
ASCII that JSON carries exactly.  (A name regopy holds with an escape
still in, from a string literal with a backslash or a data string with
a quote, would name no rule; both are refused at load.)
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

PACKAGE = 'oslo_opa.embedded_overlay'
FILE = 'oslo_opa/embedded_overlay.rego'
VERDICTS = PACKAGE.replace('.', '/') + '/verdicts'
REASONS = PACKAGE.replace('.', '/') + '/reasons'

MODULE = f"""package {PACKAGE}

# The rules an overlay denies, and grants, on this input ("*": every
# rule).  A key with no reason may be an empty set in regopy: count().
verdicts := [
\t[base64.encode(k) |
\t\tsome k
\t\tr := data.oslo_opa.overlay.deny[k]
\t\tcount(r) > 0
\t],
\t[base64.encode(k) |
\t\tsome k
\t\tr := data.oslo_opa.overlay.grant[k]
\t\tcount(r) > 0
\t],
]

# The same with their reasons: kind -> rule -> reasons.
reasons := {{
\t"deny": {{base64.encode(k): texts |
\t\tsome k
\t\tr := data.oslo_opa.overlay.deny[k]
\t\tcount(r) > 0
\t\ttexts := [_text(x) | some x in r]
\t}},
\t"grant": {{base64.encode(k): texts |
\t\tsome k
\t\tr := data.oslo_opa.overlay.grant[k]
\t\tcount(r) > 0
\t\ttexts := [_text(x) | some x in r]
\t}},
}}

_text(x) := base64.encode(x) if is_string(x)

else := base64.encode("(a reason that is not a string)")
"""


def _decode(text: Any) -> str:
    if not isinstance(text, str):
        raise TypeError(text)
    return base64.b64decode(text, validate=True).decode('utf-8')


def parse_verdicts(text: str) -> tuple[frozenset[str], frozenset[str]] | None:
    """(denied, granted) rule names from the verdicts query's result
    text; None when it is not the expected answer."""
    try:
        denied, granted = json.loads(text)['expressions'][0]
        return (
            frozenset(_decode(n) for n in denied),
            frozenset(_decode(n) for n in granted),
        )
    except (ValueError, KeyError, IndexError, TypeError, binascii.Error):
        return None


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
