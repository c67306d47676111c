"""An OPA configuration file for a sidecar that polls bundles
(``oslo-opa opa-config``).

``config``
    The configuration as a dict: one ``bundles`` service, a bundle per
    name (``persist: true``, polling delays, signature verification),
    the verification key, and optionally a decision-log and a status
    collector.  Nothing secret is ever written into it: a public key is
    inlined (it is not secret); an HMAC secret and a bearer token are
    ``${VAR}`` references OPA substitutes from its environment when it
    loads the file (``opa run`` only), or a file OPA reads.
``dump``
    That dict as YAML, keys in OPA's documented order, a PEM key as a
    literal block.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

import yaml

from oslo_opa.errors import OsloOpaError

# OPA's names for its services in the file we write.
BUNDLE_SERVICE = 'bundles'
LOGS_SERVICE = 'decision_logs'
STATUS_SERVICE = 'status'
KEY_ID = 'oslo_opa'
# Algorithms whose key is a shared secret: never inlined.
SECRET_ALGORITHMS = ('HS256', 'HS384', 'HS512')
PUBLIC_ALGORITHMS = (
    'RS256',
    'RS384',
    'RS512',
    'PS256',
    'PS384',
    'PS512',
    'ES256',
    'ES384',
    'ES512',
)
_ENV_NAME = re.compile(r'^[A-Za-z_][A-Za-z0-9_]*$')
_BUNDLE_NAME = re.compile(r'^[A-Za-z0-9_.-]+$')


class ConfigError(OsloOpaError):
    """The options cannot make a sound OPA configuration."""


@dataclasses.dataclass
class Options:
    """What ``oslo-opa opa-config`` is asked for (OPA's key names)."""

    service_url: str
    # Bundle name -> resource (a path under service_url).
    bundles: dict[str, str]
    min_delay_seconds: int = 30
    max_delay_seconds: int = 60
    persistence_directory: str | None = None
    # Signature verification: a public key's PEM text, or the name of an
    # environment variable holding an HMAC secret; keyid and scope as in
    # the signatures' claims (opa build --claims-file).
    verification_key: str | None = None
    verification_key_env: str | None = None
    algorithm: str = 'RS256'
    keyid: str = KEY_ID
    scope: str | None = None
    # The bundle service's credentials: a file OPA reads at each request,
    # or an environment variable substituted when OPA loads the file.
    bearer_token_path: str | None = None
    bearer_token_env: str | None = None
    tls_ca_cert: str | None = None
    decision_logs_url: str | None = None
    status_url: str | None = None
    # 'oci': the bundle service is an OCI registry, each bundle's
    # resource an image reference (HOST/REPOSITORY:TAG) OPA pulls.
    service_type: str | None = None


# The service types OPA knows besides plain HTTP bundle servers.
SERVICE_TYPES = ('oci',)


def parse_bundles(specs: Sequence[str]) -> dict[str, str]:
    """``NAME`` or ``NAME=RESOURCE`` (default resource ``NAME.tar.gz``),
    in order.

    :raises ConfigError: a name OPA would not take, or given twice.
    """
    out: dict[str, str] = {}
    for spec in specs:
        name, sep, resource = spec.partition('=')
        if not _BUNDLE_NAME.match(name):
            raise ConfigError(
                f'--bundle {spec!r}: the name must be letters, digits, '
                f'"_", "." or "-"'
            )
        if name in out:
            raise ConfigError(f'--bundle {name!r} given twice')
        out[name] = resource if sep and resource else f'{name}.tar.gz'
    return out


def _env_ref(name: str, option: str) -> str:
    if not _ENV_NAME.match(name):
        raise ConfigError(f'{option} {name!r}: not an environment variable')
    # OPA substitutes ${NAME} when opa run loads the file.
    return '${' + name + '}'


def _check(opts: Options) -> None:
    if not opts.bundles:
        raise ConfigError('name at least one bundle (--bundle)')
    if not re.match(r'^https?://', opts.service_url):
        raise ConfigError(
            f'--service-url {opts.service_url!r}: http:// or https://'
        )
    if opts.service_type is not None:
        if opts.service_type not in SERVICE_TYPES:
            raise ConfigError(
                f'--service-type {opts.service_type!r}: one of '
                f'{", ".join(SERVICE_TYPES)} (or none: an HTTP server)'
            )
        for name, resource in opts.bundles.items():
            # OPA pulls the resource as an image reference: there is no
            # sensible default, NAME.tar.gz is not one.
            if '/' not in resource:
                raise ConfigError(
                    f'--bundle {name}: with --service-type oci, give the '
                    f'image reference, NAME=HOST/REPOSITORY:TAG'
                )
    if not 0 < opts.min_delay_seconds <= opts.max_delay_seconds:
        raise ConfigError(
            '--min-delay-seconds must be positive and at most '
            '--max-delay-seconds'
        )
    if opts.verification_key and opts.verification_key_env:
        raise ConfigError(
            '--verification-key and --verification-key-env: give one'
        )
    if opts.bearer_token_path and opts.bearer_token_env:
        raise ConfigError('--bearer-token-path and --bearer-token-env: one')
    algorithm = opts.algorithm
    if algorithm not in SECRET_ALGORITHMS + PUBLIC_ALGORITHMS:
        raise ConfigError(f'--algorithm {algorithm!r}: not one OPA knows')
    if opts.verification_key is not None:
        if algorithm in SECRET_ALGORITHMS:
            raise ConfigError(
                f'{algorithm} verifies with a shared secret, which must not '
                f'be written into a config file: use --verification-key-env'
            )
        if 'PRIVATE KEY' in opts.verification_key:
            raise ConfigError(
                '--verification-key is a private key: give the public key '
                '(openssl pkey -in KEY -pubout); the private key signs, '
                'and stays with whoever builds the bundles'
            )
        if 'PUBLIC KEY' not in opts.verification_key:
            raise ConfigError('--verification-key: not a PEM public key')


def config(opts: Options) -> dict[str, Any]:
    """OPA's configuration for opts.

    :raises ConfigError: options that do not make a sound configuration
        (a secret to inline, a private key, bad delays).
    """
    _check(opts)
    service: dict[str, Any] = {'url': opts.service_url.rstrip('/')}
    if opts.service_type:
        service['type'] = opts.service_type
    if opts.bearer_token_path:
        service['credentials'] = {
            'bearer': {'token_path': opts.bearer_token_path}
        }
    elif opts.bearer_token_env:
        token = _env_ref(opts.bearer_token_env, '--bearer-token-env')
        service['credentials'] = {'bearer': {'token': token}}
    if opts.tls_ca_cert:
        service['tls'] = {'ca_cert': opts.tls_ca_cert}
    services: dict[str, Any] = {BUNDLE_SERVICE: service}
    signed = bool(opts.verification_key or opts.verification_key_env)
    bundles: dict[str, Any] = {}
    for name, resource in opts.bundles.items():
        entry: dict[str, Any] = {
            'service': BUNDLE_SERVICE,
            'resource': resource,
            # A restarted OPA starts deciding from its last activated
            # bundle even when the bundle server is down.
            'persist': True,
            'polling': {
                'min_delay_seconds': opts.min_delay_seconds,
                'max_delay_seconds': opts.max_delay_seconds,
            },
        }
        if signed:
            signing = {'keyid': opts.keyid}
            if opts.scope:
                signing['scope'] = opts.scope
            entry['signing'] = signing
        bundles[name] = entry
    out: dict[str, Any] = {'services': services, 'bundles': bundles}
    if signed:
        if opts.verification_key:
            key = opts.verification_key.strip() + '\n'
        else:
            key = _env_ref(opts.verification_key_env, '--verification-key-env')
        out['keys'] = {opts.keyid: {'algorithm': opts.algorithm, 'key': key}}
    if opts.decision_logs_url:
        services[LOGS_SERVICE] = {'url': opts.decision_logs_url.rstrip('/')}
        out['decision_logs'] = {'service': LOGS_SERVICE}
    if opts.status_url:
        services[STATUS_SERVICE] = {'url': opts.status_url.rstrip('/')}
        out['status'] = {'service': STATUS_SERVICE}
    if opts.persistence_directory:
        out['persistence_directory'] = opts.persistence_directory
    return out


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    # A PEM key reads (and diffs) best as a literal block.
    style = '|' if '\n' in value else None
    return dumper.represent_scalar('tag:yaml.org,2002:str', value, style)


_Dumper.add_representer(str, _str)


def dump(cfg: dict[str, Any]) -> str:
    """cfg as YAML, in the order it was built."""
    header = (
        '# OPA configuration written by oslo-opa opa-config.\n'
        '# Secrets are environment variable references, filled in by\n'
        '# opa run when it loads this file.\n'
    )
    return header + yaml.dump(
        cfg, Dumper=_Dumper, sort_keys=False, default_flow_style=False
    )
