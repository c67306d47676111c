"""``oslo-opa bundle``, ``push`` and ``status`` (of one OPA or, with
``--fleet``, of many): the policy in an OPA."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from oslo_opa.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    UsageError,
    add_overlay_args,
    warn,
)
from oslo_opa.cli.policy import overlays_of


def _check_overlays(args: argparse.Namespace, overlays: Any) -> None:
    """Warn about (or, with --strict, refuse) overlays naming no rule."""
    from oslo_opa import manifest

    found = manifest.load(args.directory)
    warn(overlays.check(found.rules, found.package_prefix, args.strict))


def _signing(args: argparse.Namespace) -> dict[str, Any]:
    """bundle.build's signing arguments from --signing-key and co."""
    if not args.signing_key:
        given = [
            flag
            for flag, value in (
                ('--signing-alg', args.signing_alg),
                ('--key-id', args.key_id),
                ('--scope', args.scope),
            )
            if value
        ]
        if given:
            raise UsageError(f'{", ".join(given)} needs --signing-key')
        return {}
    from oslo_opa import bundle_signing

    return {
        'signing_key': bundle_signing.read_key(args.signing_key),
        'signing_alg': args.signing_alg or bundle_signing.DEFAULT_ALG,
        'key_id': args.key_id,
        'scope': args.scope,
    }


def _bundle(args: argparse.Namespace) -> int:
    from oslo_opa import bundle

    signing = _signing(args)
    overlays = overlays_of(args, embedded=False)
    if overlays is not None:
        _check_overlays(args, overlays)
    built = bundle.build(
        args.directory,
        args.output,
        library=args.library,
        data_paths=args.data or (),
        revision=args.revision,
        overlays=overlays,
        prebuilt=args.prebuilt,
        **signing,
    )
    signed = ''
    if signing:
        signed = f'; signed with {signing["signing_alg"]}'
        if signing['key_id']:
            signed += f', key id {signing["key_id"]}'
    print(
        f'wrote {args.output}: revision {built["revision"]}, roots '
        f'{", ".join(built["roots"])}{signed}'
    )
    return EXIT_OK


def _client(args: argparse.Namespace, url: str | None = None) -> Any:
    from oslo_opa.drivers import http

    if args.timeout <= 0:
        raise UsageError('--timeout must be positive')
    url = url or args.opa_url
    # A fleet may mix schemes: the TLS files are for its https:// members.
    tls = url.startswith('https://') or url == args.opa_url
    return http.Transport(
        url,
        connect_timeout=min(args.timeout, 5.0),
        read_timeout=args.timeout,
        retries=1,
        max_connections=1,
        ca_file=args.ca_file if tls else None,
        cert_file=args.cert_file if tls else None,
        key_file=args.key_file if tls else None,
        tls_verify=not args.insecure,
    )


def _push(args: argparse.Namespace) -> int:
    from oslo_opa import opa_push

    overlays = overlays_of(args, embedded=False)
    if overlays is not None:
        _check_overlays(args, overlays)
    client = _client(args)
    try:
        report = opa_push.push(args.directory, client, overlays=overlays)
    except opa_push.PushError as e:
        print(f'oslo-opa: error: {e}', file=sys.stderr)
        return EXIT_FAILED
    finally:
        client.close()
    print(
        f'pushed {args.directory} to {args.opa_url}: {len(report.put)} '
        f'module(s) uploaded, {len(report.deleted)} removed, '
        f'{report.unchanged} unchanged'
    )
    return EXIT_OK


# oslo-opa bundle --library include / exclude: what each revision is.
_LIBRARY_MODES = {
    'include': 'its bundle with the helper library',
    'exclude': 'without it (--library exclude, for an OPA that loads the '
    'library from a bundle of its own)',
}


def _revisions(directory: str, st: Any) -> str:
    """Which revision of directory's bundles OPA runs, if any.  The
    two differ because the revision covers every file of the bundle."""
    loaded = {b['revision'] for b in st.bundles.values()}
    parts = [
        f'{revision} = {_LIBRARY_MODES[mode]}'
        + (' (loaded)' if revision in loaded else '')
        for mode, revision in st.local_revisions.items()
    ]
    verdict = (
        'OPA runs it'
        if loaded & set(st.local_revisions.values())
        else 'OPA runs neither revision'
    )
    return f'{directory}: {verdict}; revisions: ' + '; '.join(parts)


def _fleet(args: argparse.Namespace) -> int:
    from oslo_opa import fleet

    if args.directory:
        raise UsageError(
            '--fleet compares the instances with one another: give no '
            'directory'
        )
    # Bad URLs are usage errors before anyone is asked: survey checks
    # every scheme first, a client refuses a malformed address.
    for url in args.fleet:
        if fleet.READERS.get(fleet.scheme(url)) is fleet.read_opa:
            _client(args, url).close()
    try:
        instances = fleet.survey(args.fleet, lambda url: _client(args, url))
    except ValueError as e:
        raise UsageError(f'--fleet {e}') from None
    result = fleet.verdict(instances)
    print(fleet.render(instances, result))
    return EXIT_OK if result.ok else EXIT_FAILED


def _status(args: argparse.Namespace) -> int:
    from oslo_opa import opa_status
    from oslo_opa.opa_rest import OpaError

    if args.fleet:
        return _fleet(args)
    client = _client(args)
    try:
        st = opa_status.status(
            client, args.directory, overlays_of(args, embedded=False)
        )
    except OpaError as e:
        print(f'oslo-opa: error: {e}', file=sys.stderr)
        return EXIT_FAILED
    finally:
        client.close()
    print(f'OPA at {args.opa_url}: {st.health}')
    for name, info in st.bundles.items():
        print(
            f'bundle {name or "(unnamed)"}: revision '
            f'{info["revision"] or "(none)"}, roots '
            f'{", ".join(info["roots"])}'
        )
    if st.bundles_error:
        print(f'bundles: cannot list them ({st.bundles_error})')
    elif not st.bundles:
        print('bundles: none (policies pushed or loaded as files)')
    elif not st.bundles_ready:
        print('bundles: not all activated yet')
    if args.directory:
        if st.bundles:
            print(_revisions(args.directory, st))
        print(f'rules resolved: {st.resolved}/{st.rules}')
        for name in st.unresolved[:20]:
            print(f'  unresolved: {name}')
        if len(st.unresolved) > 20:
            print(f'  ... and {len(st.unresolved) - 20} more')
    return EXIT_OK if st.ok else EXIT_FAILED


def _opa_client_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        '--opa-url',
        default='http://127.0.0.1:8181',
        metavar='URL',
        help='http://host:port, https://host:port or unix:///path.sock '
        '(default: %(default)s)',
    )
    parser.add_argument('--ca-file', help='CA bundle verifying OPA (https)')
    parser.add_argument(
        '--cert-file', help='client certificate for mutual TLS'
    )
    parser.add_argument('--key-file', help="the client certificate's key")
    parser.add_argument(
        '--insecure',
        action='store_true',
        help="do not verify OPA's certificate",
    )
    parser.add_argument(
        '--timeout',
        type=float,
        default=60.0,
        help='seconds to wait for each answer (default: %(default)s)',
    )


def _signing_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        '--signing-key',
        metavar='FILE',
        help='sign the bundle as opa build --signing-key does: a PEM '
        'private key (RSA or EC), or a file holding the HMAC secret (its '
        'bytes as they are, as OPA reads it)',
    )
    parser.add_argument(
        '--signing-alg',
        metavar='ALG',
        help='RS256 (default), ES256, HS256, or another JWT algorithm OPA '
        'knows (RS/PS/ES/HS 256, 384, 512)',
    )
    parser.add_argument(
        '--key-id',
        metavar='ID',
        help="the key's id in OPA's keys config (the JWT's kid)",
    )
    parser.add_argument(
        '--scope', help='the scope claim OPA is configured to require'
    )


def add_commands(sub: Any) -> None:
    """The bundle, push and status subcommands."""
    bun = sub.add_parser(
        'bundle',
        help='write an OPA bundle of a converted policy',
        description=(
            'Write an OPA bundle (.tar.gz) of a converted directory, with a '
            '.manifest holding a content revision and the roots it owns, '
            'for opa run --bundle or a bundle server.'
        ),
    )
    bun.add_argument('directory', help='output of oslo-opa convert')
    bun.add_argument(
        '--output', '-o', required=True, metavar='FILE', help='bundle file'
    )
    bun.add_argument(
        '--library',
        choices=('include', 'exclude', 'only'),
        default='include',
        help='the helper library (data.oslo_opa.lib): in the bundle '
        '(default), left out, or alone; one OPA serving several services '
        'loads their bundles built with "exclude" and one built with "only"',
    )
    bun.add_argument(
        '--data',
        action='append',
        metavar='PATH',
        help='JSON/YAML data file or directory merged into data.json; '
        'repeatable',
    )
    bun.add_argument(
        '--revision', help='revision to record (default: content hash)'
    )
    bun.add_argument(
        '--prebuilt',
        action='store_true',
        help='also carry the fast bundles the conversion compiled '
        '(bundles/*.rbb, megabytes) for embedded drivers polling the '
        'bundle (bundle_url) with the same regopy: they then load rather '
        'than compile them. OPA ignores them, as it ignores the '
        'manifest.json every bundle with the library carries.',
    )
    _signing_args(bun)
    add_overlay_args(bun, data=False)
    bun.set_defaults(func=_bundle)

    psh = sub.add_parser(
        'push',
        help="upload a converted policy through OPA's Policy API",
        description=(
            'Upload the modules of a converted directory to a running OPA '
            '(PUT /v1/policies/...), removing the modules of an earlier '
            'push that are gone. All or nothing: when OPA refuses a '
            'module, every change already made is undone (exit 1).'
        ),
    )
    psh.add_argument('directory', help='output of oslo-opa convert')
    _opa_client_args(psh)
    add_overlay_args(psh, data=False)
    psh.set_defaults(func=_push)

    sta = sub.add_parser(
        'status',
        help="OPA's health, bundles, and whether a manifest's rules resolve",
        description=(
            "Report OPA's health, the bundles it has activated with their "
            'revisions and, given a converted directory, whether every rule '
            'of its manifest resolves to a boolean. Exit 0 when healthy and '
            'complete, 1 otherwise.'
        ),
    )
    sta.add_argument(
        'directory', nargs='?', help='output of oslo-opa convert (optional)'
    )
    _opa_client_args(sta)
    sta.add_argument(
        '--overlay',
        action='append',
        default=[],
        metavar='DIR',
        help='overlays shipped with the bundle: the revision compared '
        'includes them; repeatable',
    )
    sta.add_argument(
        '--fleet',
        nargs='+',
        metavar='URL',
        help='ask every instance (an OPA at http://, https:// or unix://; '
        'a status file at file:///path) which bundle revisions it runs; '
        'print a table and the stragglers, whose revisions differ from the '
        'majority or who cannot be asked. Exit 0 when all agree',
    )
    sta.set_defaults(func=_status)
