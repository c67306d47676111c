"""What shadow mode found, from decision logs.

Reads the JSON lines ``decision_log_file`` writes (rotated files and
gzipped copies too) and sums the shadow events whose Rego decision
differed from oslo.policy's, by rule, keeping one example input each
(as the log holds it: secrets erased).  Events that are not shadow
events are counted and otherwise ignored.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
from collections.abc import Iterable, Iterator
from typing import Any

from oslo_opa.errors import OsloOpaError


@dataclasses.dataclass
class RuleFindings:
    """One rule's shadow comparisons."""

    rule: str
    compared: int = 0
    mismatches: int = 0
    errors: int = 0
    # "<oslo.policy> -> <Rego>" -> count, e.g. "deny -> allow".
    kinds: dict[str, int] = dataclasses.field(default_factory=dict)
    example: dict[str, Any] | None = None


@dataclasses.dataclass
class Report:
    """Every rule's findings, and what the files held."""

    rules: dict[str, RuleFindings] = dataclasses.field(default_factory=dict)
    events: int = 0
    shadow_events: int = 0
    unreadable_lines: int = 0

    @property
    def mismatches(self) -> int:
        return sum(f.mismatches for f in self.rules.values())

    def to_json(self) -> dict[str, Any]:
        found = [f for f in self.rules.values() if f.mismatches or f.errors]
        found.sort(key=lambda f: (-f.mismatches, -f.errors, f.rule))
        return {
            'events': self.events,
            'shadow_events': self.shadow_events,
            'unreadable_lines': self.unreadable_lines,
            'mismatches': self.mismatches,
            'rules': [dataclasses.asdict(f) for f in found],
        }


def _word(outcome: Any) -> str:
    if outcome is True:
        return 'allow'
    if outcome is False:
        return 'deny'
    if outcome is None:
        return 'no decision'
    return str(outcome)


def _lines(path: str) -> Iterator[str]:
    try:
        opener = gzip.open if path.endswith('.gz') else open
        with opener(path, 'rt', encoding='utf-8') as f:
            yield from f
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise OsloOpaError(f'{path}: cannot read it: {e}') from None


def summarize(paths: Iterable[str]) -> Report:
    """The shadow findings in the decision logs at paths.

    :raises OsloOpaError: a file cannot be read (naming it).
    """
    report = Report()
    for path in paths:
        for line in _lines(path):
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except ValueError:
                report.unreadable_lines += 1
                continue
            report.events += 1
            _count(report, event)
    return report


def _count(report: Report, event: Any) -> None:
    meta = event.get('oslo_opa') if isinstance(event, dict) else None
    shadow = meta.get('shadow') if isinstance(meta, dict) else None
    if not isinstance(shadow, dict):
        return
    report.shadow_events += 1
    rule = str(meta.get('rule'))
    found = report.rules.setdefault(rule, RuleFindings(rule))
    found.compared += 1
    if shadow.get('rego') is None:
        found.errors += 1
        return
    if shadow.get('match') is not False:
        return
    found.mismatches += 1
    kind = f'{_word(shadow.get("oslo_policy"))} -> {_word(shadow["rego"])}'
    found.kinds[kind] = found.kinds.get(kind, 0) + 1
    if found.example is None:
        found.example = {
            'input': event.get('input'),
            'oslo_policy': shadow.get('oslo_policy'),
            'rego': shadow.get('rego'),
            'decision_id': event.get('decision_id'),
            'timestamp': event.get('timestamp'),
        }


def render(report: Report) -> str:
    """The report for people."""
    lines = [
        f'{report.shadow_events} shadow decisions in {report.events} '
        f'events: {report.mismatches} differed.'
    ]
    if report.unreadable_lines:
        lines.append(f'{report.unreadable_lines} lines were not JSON.')
    for f in report.to_json()['rules']:
        kinds = ', '.join(f'{n} {k}' for k, n in sorted(f['kinds'].items()))
        lines.append('')
        lines.append(
            f'{f["rule"]}: {f["mismatches"]} of {f["compared"]} differ'
            + (f' ({kinds})' if kinds else '')
            + (
                f'; Rego gave no decision {f["errors"]} times'
                if f['errors']
                else ''
            )
        )
        if f['example'] is not None:
            example = json.dumps(f['example']['input'], sort_keys=True)
            lines.append(f'  for example: {example}')
    return '\n'.join(lines)
