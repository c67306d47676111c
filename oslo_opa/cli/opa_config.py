"""``oslo-opa opa-config``: the configuration file of an OPA sidecar
that polls a bundle server."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from oslo_opa import atomic
from oslo_opa.cli.common import EXIT_OK, UsageError


def _write(path: str, text: str) -> None:
    """Replace path atomically: OPA never reads half a file.  Nothing
    secret is inlined, so OPA's user may read it (0644)."""
    atomic.write_file(path, text.encode('utf-8'))


def _opa_config(args: argparse.Namespace) -> int:
    from oslo_opa import opa_config

    key = None
    if args.verification_key:
        try:
            with open(args.verification_key, encoding='utf-8') as f:
                key = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f'--verification-key: {e}') from e
    try:
        opts = opa_config.Options(
            service_url=args.service_url,
            bundles=opa_config.parse_bundles(args.bundle),
            min_delay_seconds=args.min_delay_seconds,
            max_delay_seconds=args.max_delay_seconds,
            persistence_directory=args.persistence_directory,
            verification_key=key,
            verification_key_env=args.verification_key_env,
            algorithm=args.algorithm,
            keyid=args.keyid,
            scope=args.scope,
            bearer_token_path=args.bearer_token_path,
            bearer_token_env=args.bearer_token_env,
            tls_ca_cert=args.tls_ca_cert,
            decision_logs_url=args.decision_logs_url,
            status_url=args.status_url,
            service_type=args.service_type,
        )
        text = opa_config.dump(opa_config.config(opts))
    except opa_config.ConfigError as e:
        raise UsageError(str(e)) from e
    if args.output:
        _write(args.output, text)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def add_command(sub: Any) -> None:
    """The opa-config subcommand."""
    cfg = sub.add_parser(
        'opa-config',
        help="write an OPA sidecar's configuration for polling bundles",
        description=(
            'Print (or write) an OPA configuration file: a bundle service, '
            'the bundles it polls (persisted, so a restarted OPA decides '
            'from its last bundle while the server is down), signature '
            'verification, and optional decision-log and status '
            'collectors.  Secrets are never written: an HMAC key and a '
            'bearer token are ${VAR} references OPA fills from its '
            'environment, or a file OPA reads.  Run it as: opa run '
            '--server -c FILE.'
        ),
    )
    cfg.add_argument(
        '--service-url',
        required=True,
        metavar='URL',
        help='the bundle server (services.bundles.url)',
    )
    cfg.add_argument(
        '--service-type',
        choices=('oci',),
        help='oci: the service is an OCI registry, and each --bundle '
        'NAME=HOST/REPOSITORY:TAG an image OPA pulls (services.bundles.type)',
    )
    cfg.add_argument(
        '--bundle',
        action='append',
        required=True,
        metavar='NAME[=RESOURCE]',
        help='a bundle to poll, at RESOURCE under the service URL '
        '(default NAME.tar.gz); repeatable',
    )
    cfg.add_argument('--min-delay-seconds', type=int, default=30)
    cfg.add_argument('--max-delay-seconds', type=int, default=60)
    cfg.add_argument(
        '--persistence-directory',
        metavar='DIR',
        help="where OPA keeps the last activated bundles (OPA's default: "
        '.opa under its working directory)',
    )
    key = cfg.add_mutually_exclusive_group()
    key.add_argument(
        '--verification-key',
        metavar='FILE',
        help='PEM public key verifying the bundles (inlined: not secret)',
    )
    key.add_argument(
        '--verification-key-env',
        metavar='VAR',
        help='environment variable holding the key (an HS256 secret)',
    )
    # Also under oslo-opa bundle's names, so one set of flags serves both.
    cfg.add_argument(
        '--algorithm',
        '--signing-alg',
        dest='algorithm',
        default='RS256',
        help='signing algorithm (default: %(default)s)',
    )
    cfg.add_argument(
        '--key-id',
        '--keyid',
        dest='keyid',
        default='oslo_opa',
        help="the key's name (keys.<keyid>; bundles signed with a --key-id "
        'are verified by the key of that name; default: %(default)s)',
    )
    cfg.add_argument(
        '--scope', help="required scope of the signatures' claims"
    )
    token = cfg.add_mutually_exclusive_group()
    token.add_argument(
        '--bearer-token-path',
        metavar='FILE',
        help='bearer token for the bundle server, read by OPA from FILE',
    )
    token.add_argument(
        '--bearer-token-env',
        metavar='VAR',
        help='bearer token for the bundle server, from $VAR',
    )
    cfg.add_argument(
        '--tls-ca-cert',
        metavar='FILE',
        help="CA certificate verifying the bundle server's",
    )
    cfg.add_argument(
        '--decision-logs-url',
        metavar='URL',
        help='send decision logs to this collector',
    )
    cfg.add_argument(
        '--status-url',
        metavar='URL',
        help='send status reports to this collector (also turns on '
        "OPA's GET /v1/status, which status --fleet reads for errors)",
    )
    cfg.add_argument(
        '--output', '-o', metavar='FILE', help='write FILE, not stdout'
    )
    cfg.set_defaults(func=_opa_config)
