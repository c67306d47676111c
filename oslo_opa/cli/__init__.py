"""The ``oslo-opa`` command: parse arguments, call the library, report.

Exit codes: 0 success; 1 a decision or check failed (``decide`` with a
denied request under ``--fail-on-deny``, ``--strict`` with warnings,
``verify`` finding a difference no overlay accounts for, ``push`` refused
by OPA or unable to reach it, ``status`` finding OPA unhealthy,
unreachable or missing a rule, ``status --fleet`` finding stragglers);
2 bad usage or bad input (unknown option, unreadable or malformed file,
a rule that cannot be converted, a converted directory or an overlay
that does not load).  ``test`` follows
``opa test``: 0 every test passed, 2 one did not, 1 the tests cannot run.
``explain`` exits 0 when the request is allowed, 3 when it is denied.

One module per group of subcommands: ``policy`` (convert, decide,
verify), ``explain``, ``opa`` (bundle, push, status), ``opa_config``
(opa-config), ``rego_test`` (test), ``rollout`` (shadow-report).
``shadow-report`` exits 1 when shadow mode found differences.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from oslo_opa.cli import explain, opa, opa_config, policy, rego_test, rollout
from oslo_opa.cli.common import EXIT_FAILED, EXIT_USAGE, Parser
from oslo_opa.errors import OsloOpaError, StrictModeError

__all__ = ['build_parser', 'main']


def build_parser() -> argparse.ArgumentParser:
    """The ``oslo-opa`` argument parser."""
    parser = Parser(
        prog='oslo-opa',
        description='Convert oslo.policy rules to Rego and decide them.',
    )
    sub = parser.add_subparsers(dest='command', required=True)
    policy.add_commands(sub)
    explain.add_command(sub)
    rego_test.add_command(sub)
    opa.add_commands(sub)
    opa_config.add_command(sub)
    rollout.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``oslo-opa``."""
    logging.basicConfig(level=logging.ERROR, format='%(name)s: %(message)s')
    # oslo.policy logs parse failures itself; convert reports them by rule.
    logging.getLogger('oslo_policy').setLevel(logging.CRITICAL)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except StrictModeError as e:
        for warning in e.warnings:
            print(f'oslo-opa: error: {warning}', file=sys.stderr)
        return EXIT_FAILED
    except OsloOpaError as e:
        print(f'oslo-opa: error: {e}', file=sys.stderr)
        return EXIT_USAGE
