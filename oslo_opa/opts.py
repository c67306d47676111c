"""The ``[oslo_opa]`` options, and ``list_opts`` for oslo-config-generator.

``oslo-config-generator --namespace oslo.opa`` prints them.
"""

from __future__ import annotations

import copy

from oslo_config import cfg

GROUP = 'oslo_opa'

# The http driver's settings, also its defaults when used without
# oslo.config (``decider.load(driver='http', opa_url=...)``).
HTTP_DEFAULTS = {
    'opa_url': 'http://127.0.0.1:8181',
    'opa_connect_timeout': 0.25,
    'opa_read_timeout': 0.5,
    'opa_retries': 1,
    'opa_circuit_breaker_interval': 2.0,
    'opa_max_connections': 16,
    'opa_ca_file': None,
    'opa_cert_file': None,
    'opa_key_file': None,
    'opa_tls_verify': True,
    'opa_warm_up': True,
}
MAX_RETRIES = 5

_options = [
    cfg.StrOpt(
        'driver',
        default='embedded',
        help='How decisions are made: "embedded" evaluates the converted '
        'Rego in this process (regopy); "http" asks an OPA server '
        '(sidecar). Other drivers plug in through the oslo_opa.drivers '
        'entry point namespace.',
    ),
    cfg.StrOpt(
        'rego_path',
        help='The directory written by "oslo-opa convert": its '
        'manifest.json, the Rego modules and the helper library. Required '
        'by the embedded driver, and by failure_mode = fallback.',
    ),
    cfg.ListOpt(
        'data_path',
        default=[],
        help='JSON or YAML files, or directories of them, whose top-level '
        'objects are merged into the Rego "data" document (for rules that '
        'read relationships or other data). Reloaded like rego_path.',
    ),
    cfg.ListOpt(
        'overlay_path',
        default=[],
        help='Directories (or files) of overlays: Rego v1 files of your '
        'own, in package oslo_opa.overlay, that deny or grant rules on top '
        'of the converted ones (deny[<rule>] contains <reason>, grant['
        '<rule>] contains <reason>; "*" is every rule). A deny makes the '
        'rule false, else a grant makes it true, wherever the rule is '
        'decided, through rule: references too. oslo-opa convert never '
        'touches them. Reloaded like rego_path; a file that does not load '
        'keeps the previous policy in force. With driver = http, name the '
        'overlays OPA holds: the rules they can change are sent the whole '
        'input.',
    ),
    cfg.StrOpt(
        'failure_mode',
        default='deny',
        choices=[
            ('deny', 'Deny when no decision can be had (fail closed).'),
            (
                'fallback',
                "Decide with the rule's oslo.policy check string recorded "
                'in the manifest when the driver fails (with overlay_path '
                'set, deny: the check string cannot apply overlays).',
            ),
            (
                'embedded',
                'Decide with the embedded driver (regopy, in this process) '
                'on the same rego_path and data_path when the driver fails; '
                'for driver = http. The converted policy is loaded at '
                'start-up, as with driver = embedded.',
            ),
        ],
        help='What a decision is when the driver cannot make one (policy '
        'not loadable, rule missing, evaluation error, OPA unreachable).',
    ),
    cfg.IntOpt(
        'cache_size',
        default=1024,
        min=0,
        help='Decisions remembered per process, keyed by the rule and the '
        'exact input the policy reads. 0 turns the cache off. Entries are '
        'dropped whenever the policy or data is reloaded.',
    ),
    cfg.FloatOpt(
        'cache_ttl',
        default=30.0,
        min=0.0,
        help='Seconds a remembered decision stays valid.',
    ),
    cfg.FloatOpt(
        'reload_interval',
        default=5.0,
        min=0.0,
        help='Seconds between checks of rego_path and data_path for '
        'changed files (checked on decisions, like oslo.policy does for '
        'policy files). 0 checks on every decision.',
    ),
    cfg.BoolOpt(
        'strict_builtin_errors',
        default=True,
        help='Make a Rego builtin error an evaluation error (a deny, or '
        'the fallback) instead of an undefined value.',
    ),
    cfg.StrOpt(
        'metrics',
        default='off',
        choices=[
            ('off', 'Record no metrics.'),
            (
                'registry',
                "Record Prometheus metrics in prometheus_client's default "
                'registry (or, with PROMETHEUS_MULTIPROC_DIR set, its '
                "multiprocess files), for the service's own exporter.",
            ),
            (
                'serve',
                'Record them and serve them on metrics_listen '
                "(prometheus_client's HTTP exporter, one per process; "
                "in multiprocess mode every worker's, summed).",
            ),
        ],
        help='Prometheus metrics of decisions, fallbacks, errors, the '
        'circuit breaker and policy reloads (oslo_opa_*, listed in the '
        'operators guide). No metric carries input values.',
    ),
    cfg.StrOpt(
        'metrics_listen',
        default='127.0.0.1:9464',
        help='metrics = serve: host:port the exporter listens on.',
    ),
]

_http_options = [
    cfg.StrOpt(
        'opa_url',
        default=HTTP_DEFAULTS['opa_url'],
        help='driver = http: the OPA server, http://host:port, '
        'https://host:port or unix:///path/to/opa.sock. Decisions are '
        'POST /v1/data/<rule path> (paths from rego_path/manifest.json).',
    ),
    cfg.FloatOpt(
        'opa_connect_timeout',
        default=HTTP_DEFAULTS['opa_connect_timeout'],
        min=0.001,
        help='driver = http: seconds to wait for a connection to OPA.',
    ),
    cfg.FloatOpt(
        'opa_read_timeout',
        default=HTTP_DEFAULTS['opa_read_timeout'],
        min=0.001,
        help='driver = http: seconds to wait for each read of an answer '
        'from OPA. A decision takes OPA well under a millisecond; this '
        'bounds what a hung OPA costs a request.',
    ),
    cfg.IntOpt(
        'opa_retries',
        default=HTTP_DEFAULTS['opa_retries'],
        min=0,
        max=MAX_RETRIES,
        help='driver = http: immediate retries of a request that failed '
        'before it was sent (connection refused, connect timeout). A '
        'request that may have reached OPA is never retried.',
    ),
    cfg.FloatOpt(
        'opa_circuit_breaker_interval',
        default=HTTP_DEFAULTS['opa_circuit_breaker_interval'],
        min=0.0,
        help='driver = http: after OPA fails to answer (timeout, refused '
        'or reset connection, TLS error), decisions fail at once '
        '(failure_mode) and a background thread probes OPA, first after '
        '0.1 s, then at doubling delays up to this many seconds; the first '
        'answer restores service. 0 disables the breaker (every decision '
        'asks OPA).',
    ),
    cfg.IntOpt(
        'opa_max_connections',
        default=HTTP_DEFAULTS['opa_max_connections'],
        min=1,
        help='driver = http: keep-alive connections to OPA kept open, '
        'shared by all threads. More concurrent decisions open extra '
        'connections, closed after use.',
    ),
    cfg.StrOpt(
        'opa_ca_file',
        help="driver = http with https://: CA bundle that verifies OPA's "
        'certificate (default: the system CAs).',
    ),
    cfg.StrOpt(
        'opa_cert_file',
        help='driver = http with https://: client certificate (PEM) for '
        'mutual TLS.',
    ),
    cfg.StrOpt(
        'opa_key_file',
        help="driver = http with https://: the client certificate's key "
        '(PEM), if not in opa_cert_file.',
    ),
    cfg.BoolOpt(
        'opa_tls_verify',
        default=HTTP_DEFAULTS['opa_tls_verify'],
        help="driver = http with https://: verify OPA's certificate and "
        'host name. Turning it off is logged as a warning.',
    ),
    cfg.BoolOpt(
        'opa_warm_up',
        default=HTTP_DEFAULTS['opa_warm_up'],
        help="driver = http: ask every rule's path once in the background "
        'at start-up, after the manifest changes and after an outage, so '
        'OPA has prepared the queries before real requests arrive.',
    ),
]

# Rolling out: shadow mode and decision logs (oslo_opa.shadow,
# oslo_opa.logs).
_rollout_options = [
    cfg.StrOpt(
        'mode',
        default='enforce',
        choices=[
            ('enforce', 'The opa check decides with the converted Rego.'),
            (
                'shadow',
                "The opa check decides with the rule's original oslo.policy "
                'check string (from the manifest), exactly as oslo.policy '
                'would without oslo.opa; the Rego decision for the same '
                'input is made in a background thread and compared, and a '
                'difference is logged and counted.',
            ),
        ],
        help='Whether the converted Rego decides (enforce), or only runs '
        'beside oslo.policy to show where it would decide otherwise '
        '(shadow). Decisions made through the Python API are always '
        "Rego's.",
    ),
    cfg.IntOpt(
        'shadow_queue_size',
        default=10000,
        min=1,
        help='mode = shadow: decisions waiting for their Rego comparison. '
        'When the queue is full a decision is not compared (counted as '
        'dropped); a request never waits.',
    ),
    cfg.StrOpt(
        'decision_log_file',
        help="Write every decision as one JSON line, an event in OPA's "
        'decision-log format, to this file (rotated by size). Unset: off.',
    ),
    cfg.IntOpt(
        'decision_log_max_bytes',
        default=100 * 1024 * 1024,
        min=1024,
        help='decision_log_file: its size at which it is rotated.',
    ),
    cfg.IntOpt(
        'decision_log_backups',
        default=5,
        min=0,
        help='decision_log_file: rotated files kept (FILE.1 ... FILE.N).',
    ),
    cfg.StrOpt(
        'decision_log_url',
        help='Send decision events to a decision-log service, as OPA does: '
        'gzipped JSON arrays POSTed to <url>/logs in batches, with retries. '
        'A collector that is down never slows or fails a decision: events '
        'beyond decision_log_buffer are dropped and counted. Unset: off.',
    ),
    cfg.IntOpt(
        'decision_log_buffer',
        default=10000,
        min=1,
        help='Decision events held in memory waiting for a sink.',
    ),
    cfg.ListOpt(
        'decision_log_mask',
        default=[],
        help='JSON pointers erased from every decision event, in the style '
        "of OPA's system.log.mask, for example "
        '/input/credentials/user_id or /input/target/owner. Tokens, '
        'passwords and secrets (any key naming one, at any depth of the '
        'input) are always erased.',
    ),
    cfg.BoolOpt(
        'decision_log_explain',
        default=False,
        help='Add the failing checks of a denied decision to its event '
        '(an explanation per denial: it costs).',
    ),
]

# The embedded driver following a bundle server (oslo_opa.bundle_fetch,
# oslo_opa.drivers.bundle_poll).
_bundle_options = [
    cfg.StrOpt(
        'bundle_url',
        help='driver = embedded (or failure_mode = embedded): download the '
        'policy from this bundle server URL, the same .tar.gz the OPA '
        'sidecars poll (written by "oslo-opa bundle" with the library, '
        'which adds the manifest.json the embedded driver needs), instead '
        'of reading rego_path. A background thread polls it with '
        'If-None-Match; a new bundle is checked (signature, roots), '
        'compiled and put in force in one step; one that fails any check '
        'is refused and the last good one stays in force. Unset: rego_path '
        'is read.',
    ),
    cfg.StrOpt(
        'bundle_verification_key',
        help='bundle_url: the file holding the key that verifies the '
        "bundle's signature (.signatures.json), as OPA's "
        '--verification-key: a PEM public key (RS*, PS*, ES*) or the '
        'HS256 shared secret. Set: an unsigned bundle, a changed, missing '
        'or extra file, or another key, is refused. Unset: a signed '
        'bundle is refused (as OPA does).',
    ),
    cfg.StrOpt(
        'bundle_verification_scope',
        help='bundle_url with bundle_verification_key: the scope the '
        "bundle's signature must carry, as the scope of OPA's keys "
        'configuration ("oslo-opa bundle --scope", "oslo-opa opa-config '
        '--scope"). Unset: a signature carrying a scope is refused, as '
        'OPA refuses it.',
    ),
    cfg.FloatOpt(
        'bundle_polling_interval',
        default=60.0,
        min=0.1,
        help='bundle_url: seconds between two downloads (each worker '
        'process polls; an unchanged bundle costs a 304).',
    ),
    cfg.StrOpt(
        'bundle_cache_dir',
        help='bundle_url: the directory where the last activated bundle '
        'is kept (with active.json naming it, and status/<pid>.json per '
        'process), so that a worker started while the bundle server is '
        'down starts with the last activated policy. Shared by the '
        'workers of a host. Default: ~/.cache/oslo-opa/bundles/<digest '
        "of the URL> in the service user's home (/var/lib/<service> for "
        'most distributions).',
    ),
]

HTTP_OPTION_NAMES = tuple(o.dest for o in _http_options)
ROLLOUT_OPTION_NAMES = tuple(o.dest for o in _rollout_options)
BUNDLE_OPTION_NAMES = tuple(o.dest for o in _bundle_options)
_options = _options + _http_options + _rollout_options + _bundle_options
OPTION_NAMES = tuple(o.dest for o in _options)


def register_opts(conf: cfg.ConfigOpts) -> None:
    """Register the ``[oslo_opa]`` options on conf (idempotent)."""
    conf.register_opts(_options, group=GROUP)


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """The options, for oslo-config-generator (``oslo.config.opts``)."""
    return [(GROUP, copy.deepcopy(_options))]
