"""``oslo-opa shadow-report``: what shadow mode found."""

from __future__ import annotations

import argparse
import json
from typing import Any

from oslo_opa.cli.common import EXIT_FAILED, EXIT_OK


def _shadow_report(args: argparse.Namespace) -> int:
    from oslo_opa import shadow_report

    report = shadow_report.summarize(args.logs)
    if args.format == 'json':
        print(json.dumps(report.to_json(), indent=2, sort_keys=True))
    else:
        print(shadow_report.render(report))
    return EXIT_FAILED if report.mismatches else EXIT_OK


def add_commands(sub: Any) -> None:
    rep = sub.add_parser(
        'shadow-report',
        help='summarize shadow mode mismatches from decision logs',
        description=(
            'Read decision logs ([oslo_opa] decision_log_file, rotated and '
            'gzipped copies too) and list, by rule, the shadow decisions '
            'where Rego differed from oslo.policy, with counts and one '
            'example input each.  Exit 0 when none differed, 1 when some '
            'did, 2 when a file cannot be read.'
        ),
    )
    rep.add_argument('logs', nargs='+', metavar='LOG', help='a decision log')
    rep.add_argument('--format', choices=('text', 'json'), default='text')
    rep.set_defaults(func=_shadow_report)
