"""What the ``oslo-opa`` subcommands share: exit codes, usage errors,
and the options naming overlays and data."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from oslo_opa.errors import OsloOpaError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f'{self.prog}: error: {message}\n')


class UsageError(OsloOpaError):
    """Bad usage: reported in one line, exit 2."""


def add_overlay_args(
    parser: argparse.ArgumentParser,
    data: bool = True,
    strict: str = 'an overlay naming a rule the policy does not have is an '
    'error (exit 1), not a warning',
) -> None:
    """--overlay (repeatable), --strict and, with data, --data."""
    parser.add_argument(
        '--overlay',
        action='append',
        default=[],
        metavar='DIR',
        help='a directory (or file) of overlays, Rego in package '
        'oslo_opa.overlay that denies or grants rules; repeatable',
    )
    parser.add_argument('--strict', action='store_true', help=strict)
    if data:
        parser.add_argument(
            '--data',
            action='append',
            default=[],
            metavar='PATH',
            help='JSON/YAML data file or directory the overlays read '
            '(merged into data, as [oslo_opa] data_path); repeatable',
        )


def warn(warnings: list[str]) -> None:
    for warning in warnings:
        print(f'oslo-opa: warning: {warning}', file=sys.stderr)
