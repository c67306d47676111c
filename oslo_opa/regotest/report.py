"""Reporting results as ``opa test`` does: text, JSON and the exit code."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from oslo_opa.regotest.results import TestResult


def go_duration(ns: int) -> str:
    """ns as Go prints a time.Duration: 458.674µs, 1.5ms, 2m3.5s."""
    if ns == 0:
        return '0s'
    if ns < 1000:
        return f'{ns}ns'
    for unit, size in (('µs', 10**3), ('ms', 10**6)):
        if ns < size * 1000:
            whole, frac = divmod(ns, size)
            digits = len(str(size)) - 1
            tail = f'{frac:0{digits}d}'.rstrip('0')
            return f'{whole}.{tail}{unit}' if tail else f'{whole}{unit}'
    seconds, frac = divmod(ns, 10**9)
    tail = f'{frac:09d}'.rstrip('0')
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    out = f'{secs}.{tail}s' if tail else f'{secs}s'
    if hours:
        return f'{hours}h{minutes}m{out}'
    return f'{minutes}m{out}' if minutes else out


# What Go's strings.TrimSpace strips (unicode.IsSpace).
_GO_SPACE = (
    ' \t\n\v\f\r\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005'
    '\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000'
)


def _output_lines(output: bytes) -> list[str]:
    """A test's print() output as opa test shows it: trimmed, each line
    indented by two spaces (empty ones too), between empty lines."""
    if not output:
        return []
    text = output.decode('utf-8', 'replace').strip(_GO_SPACE)
    return ['', *(f'  {line}' for line in text.split('\n')), '']


def _leaves(
    subs: dict[str, Any], depth: int = 0
) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """(depth, name, sub-result) of every test case, depth first."""
    for key in sorted(subs):
        sub = subs[key]
        yield depth, key, sub
        yield from _leaves(sub.get('sub_results') or {}, depth + 1)


def render_text(results: Sequence[TestResult], verbose: bool = False) -> str:
    """opa test's pretty output: the tests that did not pass (every test
    with verbose), then how many passed, failed, were skipped, erred."""
    lines: list[str] = []
    counts = {'PASS': 0, 'FAIL': 0, 'SKIPPED': 0, 'ERROR': 0}
    last_file = ''
    for r in results:
        if r.skipped or r.error is not None:
            counts[r.outcome] += 1
        elif r.sub_results:
            for _, _, sub in _leaves(r.sub_results):
                if not sub.get('sub_results'):
                    counts['FAIL' if sub.get('fail') else 'PASS'] += 1
        else:
            counts[r.outcome] += 1
        if verbose or not r.passed:
            if last_file and last_file != r.file:
                lines.append('')
            last_file = r.file
            lines.append(f'{r.file}:{r.row}:')
            if r.skipped:
                lines.append(f'{r.full_name}: SKIPPED')
            else:
                lines.append(
                    f'{r.full_name}: {r.outcome} '
                    f'({go_duration(r.duration_ns)})'
                )
            for depth, key, sub in _leaves(r.sub_results or {}):
                if sub.get('fail') or verbose:
                    outcome = 'FAIL' if sub.get('fail') else 'PASS'
                    lines.append(f'  {"  " * depth}{key}: {outcome}')
            lines += _output_lines(r.output)
        if r.error is not None:
            lines.append(f'  {r.error}')
    failures = [r for r in results if r.failed]
    if verbose and failures:
        lines += ['-' * 80, 'FAILURES', '-' * 80]
        for r in failures:
            lines += [f'{r.full_name}: FAIL ({go_duration(r.duration_ns)})']
            lines += ['', '']
    if lines:
        lines.append('-' * 80)
    total = sum(counts.values())
    for outcome, n in counts.items():
        if n:
            lines.append(f'{outcome}: {n}/{total}')
    return '\n'.join(lines) + '\n' if lines else ''


def render_json(results: Sequence[TestResult]) -> str:
    """opa test --format json: a list of results."""
    return (
        json.dumps(
            [r.as_dict() for r in results], indent=2, ensure_ascii=False
        )
        + '\n'
    )


def exit_code(
    results: Sequence[TestResult], exit_zero_on_skipped: bool = False
) -> int:
    """opa test's: 0 when every test passed, 2 otherwise (a skipped test
    too, unless exit_zero_on_skipped)."""
    for r in results:
        if not r.passed and not (r.skipped and exit_zero_on_skipped):
            return 2
    return 0
