"""``oslo-opa test``: Rego test_ rules on the embedded engine."""

from __future__ import annotations

import argparse
import csv
import sys
from typing import Any

from oslo_opa.cli.common import EXIT_FAILED


def _test(args: argparse.Namespace) -> int:
    from oslo_opa import overlay, regotest

    paths = [*args.paths, *args.overlay]
    if args.overlay:
        # Checked as the drivers check them, not only compiled.
        try:
            overlay.load(args.overlay, embedded=False)
        except overlay.OverlayError as e:
            print(f'oslo-opa: error: {e}', file=sys.stderr)
            return EXIT_FAILED
    try:
        results = regotest.run(
            paths,
            run=args.run,
            timeout=args.timeout,
            ignore=args.ignore,
        )
    except regotest.RegoTestError as e:
        # opa test's status when the tests cannot run at all.
        print(f'oslo-opa: error: {e}', file=sys.stderr)
        return EXIT_FAILED
    if args.format == 'json':
        sys.stdout.write(regotest.render_json(results))
    else:
        sys.stdout.write(regotest.render_text(results, args.verbose))
    if args.fail_on_empty and not results:
        print('oslo-opa: error: no tests were run', file=sys.stderr)
        return EXIT_FAILED
    return regotest.exit_code(results, args.exit_zero_on_skipped)


def _comma_list(value: str) -> list[str]:
    """A comma-separated (CSV) list, as opa's string-slice flags read
    theirs: --ignore 'a,b' is two patterns, '"a,b"' one."""
    return next(csv.reader([value]), [])


def add_command(sub: Any) -> None:
    """The test subcommand: opa test, on the embedded engine."""
    tst = sub.add_parser(
        'test',
        help='run Rego test_ rules with the embedded engine (no OPA)',
        description=(
            'Run the test_ rules of the .rego files under the paths with '
            'the embedded engine, as opa test does: JSON and YAML files '
            'are data, todo_test_ rules are skipped.  Exit 0 when every '
            'test passes, 2 when one fails, errs or is skipped, 1 when '
            'the tests cannot run (no such path, Rego that does not '
            'compile).'
        ),
    )
    tst.add_argument(
        'paths', nargs='*', metavar='PATH', help='file or directory'
    )
    tst.add_argument(
        '--verbose',
        '-v',
        action='store_true',
        help='report every test (PASS too)',
    )
    tst.add_argument(
        '--format',
        '-f',
        choices=['text', 'pretty', 'json'],
        default='text',
        help='text (opa test\'s "pretty") or json',
    )
    tst.add_argument(
        '--run',
        '-r',
        metavar='REGEX',
        help='run only the tests whose full name (data.pkg.test_x) matches',
    )
    tst.add_argument(
        '--timeout',
        type=float,
        default=30.0,
        metavar='SECONDS',
        help='time one test may take (default: %(default)s)',
    )
    tst.add_argument(
        '--ignore',
        action='extend',
        type=_comma_list,
        default=[],
        metavar='PATTERN',
        help='skip the files and directories below the paths whose name '
        "matches, a glob ('.*' skips hidden ones); repeat it or separate "
        'patterns with commas, as opa test --ignore',
    )
    tst.add_argument(
        '--exit-zero-on-skipped',
        '-z',
        action='store_true',
        help='skipped tests do not make the exit status 2',
    )
    tst.add_argument(
        '--overlay',
        action='append',
        default=[],
        metavar='DIR',
        help='a directory of overlays to test too (its _test.rego files '
        'are the tests); checked as the drivers check overlays; '
        'repeatable',
    )
    tst.add_argument(
        '--fail-on-empty',
        action='store_true',
        help='exit 1 when no test was run',
    )
    tst.set_defaults(func=_test)
