"""Explanations (``oslo_opa.explain``) as text, and masked for logs.

:func:`render` is the tree ``oslo-opa explain`` prints;
:func:`render_leaves` is one line for a log (a denial's decision event,
a shadow mismatch) from :func:`oslo_opa.explain.failing_leaves`.
Credential values sit under each check's ``credentials``: :func:`mask`
replaces them, and both renderers take ``mask=True``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any

MASK = '***'
_INDENT = '  '


def mask(
    value: Any,
    keep: Collection[str] = (),
    only: Collection[str] | None = None,
) -> Any:
    """A copy of an explanation (or of a list of leaves) with credential
    values replaced by ``"***"``: every one but those named in keep, or
    with only, just those (the credentials a decision log's
    ``/input/credentials/<name>`` masks name)."""
    if isinstance(value, list):
        return [mask(v, keep, only) for v in value]
    if not isinstance(value, dict):
        return copy.deepcopy(value)
    out = {}
    for k, v in value.items():
        if k == 'credentials' and isinstance(v, dict):
            out[k] = {
                c: MASK
                if c not in keep and (only is None or c in only)
                else copy.deepcopy(x)
                for c, x in v.items()
            }
        else:
            out[k] = mask(v, keep, only)
    return out


def _json(value: Any) -> str:
    # ensure_ascii: a value can never break the line or the terminal.
    return json.dumps(value, sort_keys=True, ensure_ascii=True)


def compared(node: Mapping[str, Any]) -> str:
    """What a check compared, in one phrase (empty for other nodes)."""
    parts = []
    if node.get('kind') == 'check':
        parts.append(f'match {_json(node.get("match"))}')
    for k, v in (node.get('target') or {}).items():
        parts.append(f'target {k}={_json(v)}')
    for k in node.get('missing_target') or ():
        parts.append(f'target {k} missing')
    for k, v in (node.get('credentials') or {}).items():
        parts.append(f'credentials {k}={_json(v)}')
    for k in node.get('missing_credentials') or ():
        parts.append(f'credentials {k} missing')
    for k, reasons in (node.get('reasons') or {}).items():
        parts.append(f'{_json(k)}: {"; ".join(map(_json, reasons))}')
    return ', '.join(parts)


def _line(node: Mapping[str, Any]) -> str:
    kind, text = node['kind'], node['text']
    if kind in ('and', 'or'):
        text = f'{kind} {text}'
    elif kind == 'overlay':
        text = f'overlay {text}'
    line = f'{node["outcome"].upper():5}  {text}'
    what = compared(node)
    if what:
        line += f'  [{what}]'
    if not node.get('reached', True):
        line += '  (not reached)'
    return line


def _walk(node: Mapping[str, Any], depth: int, out: list[str]) -> None:
    pad = _INDENT * depth
    out.append(pad + _line(node))
    if node.get('note'):
        out.append(f'{pad}{_INDENT}       note: {node["note"]}')
    for child in node.get('children') or ():
        _walk(child, depth + 1, out)


def render(result: Mapping[str, Any], mask_credentials: bool = False) -> str:
    """The explanation as an indented tree, one node a line: outcome
    (PASS, FAIL, RAISE), the node, what a check compared."""
    if mask_credentials:
        result = mask(result)
    verdict = 'ALLOW' if result.get('decision') else 'DENY'
    out = [f'{verdict}  {result["rule"]}']
    out += [f'note: {n}' for n in result.get('notes') or ()]
    _walk(result['tree'], 0, out)
    return '\n'.join(out)


def render_leaves(
    leaves: Sequence[Mapping[str, Any]], mask_credentials: bool = True
) -> str:
    """Failing leaves in one line, credentials masked unless asked."""
    if mask_credentials:
        leaves = mask(list(leaves))
    parts = []
    for leaf in leaves:
        text = f'{"not " if leaf.get("negated") else ""}{leaf["text"]}'
        text += f' {leaf["outcome"]}'
        what = compared(leaf)
        if what:
            text += f' ({what})'
        parts.append(text)
    return '; '.join(parts)
