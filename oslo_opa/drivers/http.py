"""The HTTP driver: decisions from an OPA server, the sidecar way.

``[oslo_opa] driver = http`` sends each decision to a local OPA with the
Data API (``POST /v1/data/<manifest path>``).  ``rego_path`` is still
read, for the manifest: it maps rule names to REST paths, and its
``target_keys``/``credentials`` project the input exactly as the embedded
driver does (:meth:`oslo_opa.engine.RegoPolicy.input_for`), so OPA is
sent only what a rule reads.  OPA must serve the same conversion (``oslo-
opa bundle`` or ``oslo-opa push``).

Transport
    One pool of keep-alive connections per process (``transport.py``):
    a decision is one round trip, one write and normally one read,
    bounded by timeouts; failures before the request was sent are
    retried ``opa_retries`` times, nothing after.
Batches
    ``decide_many`` asks the bundle's batch rules (``oslo_opa/batch.py``)
    for up to 1,000 decisions in one request, the targets of one rule
    for one caller as a group (``http_batch.py``).
Circuit breaker and warm-up
    A transport failure opens the circuit (decisions fail at once until
    a background probe gets an answer); OPA is asked every rule's path
    once at start-up, so that real requests find it prepared
    (``upkeep.py``).
Answers
    Only HTTP 200 with ``{"result": true|false}`` is a decision.  A
    non-200, an undefined ``result`` (the path is not loaded), a
    non-boolean, invalid JSON, a timeout or an open circuit raise
    :class:`~oslo_opa.drivers.base.DecisionError` naming the rule (the
    Decider then applies ``failure_mode``).  Error texts never carry
    input values: OPA's own messages are reduced to their code.
    ``decision_id`` (when OPA logs decisions) and the latency are logged
    at debug level.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Any

from oslo_opa import inputs, notes, overlay
from oslo_opa.drivers.base import DecisionError, PolicyDirDriver, Settings
from oslo_opa.drivers.http_batch import HttpBatching
from oslo_opa.drivers.transport import Transport, TransportError
from oslo_opa.drivers.upkeep import Upkeep
from oslo_opa.engine import RegoPolicy
from oslo_opa.opts import HTTP_DEFAULTS

LOG = logging.getLogger(__name__)

DEFAULTS = HTTP_DEFAULTS
# One encoder for every request (json.dumps with options makes one each).
_encode = json.JSONEncoder(separators=(',', ':')).encode
# OPA's whole answer when it logs no decisions: no need to parse it.
_PLAIN = {
    b'{"result":true}\n': True,
    b'{"result":false}\n': False,
    b'{"result":true}': True,
    b'{"result":false}': False,
}

# --- the driver --------------------------------------------------------------


def _option(options: Mapping[str, Any], name: str) -> Any:
    value = options.get(name)
    return DEFAULTS[name] if value is None else value


class HttpDriver(HttpBatching, Upkeep, PolicyDirDriver):
    """Decide with an OPA server (``driver = http``).

    ``rego_path`` is required: its manifest maps rules to OPA paths.
    """

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        opts = settings.options
        self.url = str(_option(opts, 'opa_url'))
        read_timeout = float(_option(opts, 'opa_read_timeout'))
        self.transport = Transport(
            self.url,
            connect_timeout=float(_option(opts, 'opa_connect_timeout')),
            read_timeout=read_timeout,
            retries=int(_option(opts, 'opa_retries')),
            max_connections=int(_option(opts, 'opa_max_connections')),
            ca_file=opts.get('opa_ca_file'),
            cert_file=opts.get('opa_cert_file'),
            key_file=opts.get('opa_key_file'),
            tls_verify=bool(_option(opts, 'opa_tls_verify')),
        )
        if not _option(opts, 'opa_tls_verify'):
            LOG.warning(
                'oslo.opa: opa_tls_verify is off: the identity of the OPA '
                'at %s is not checked',
                self.url,
            )
        # OPA's first query on a path prepares it: give warm-up more time.
        self._warm_timeout = (
            self.transport.connect_timeout,
            max(read_timeout * 4, 2.0),
        )
        self._query = (
            '?strict-builtin-errors' if settings.strict_builtin_errors else ''
        )
        self._start_upkeep(
            interval=float(_option(opts, 'opa_circuit_breaker_interval')),
            warm_up=bool(_option(opts, 'opa_warm_up')),
        )
        self._dropped_seen = 0
        # What OPA lacks of the batch rules (http_batch.py), until the
        # policy changes.
        self._no_batch = self._no_groups = False
        self._groupable: tuple[RegoPolicy, frozenset[str]] | None = None
        self._check()

    # --- policy (manifest) ---------------------------------------------------

    what = 'the manifest'

    def load(self) -> RegoPolicy:
        # Only the manifest and module texts are read (for paths and
        # projection), and the overlays OPA holds too (a rule they can
        # change is sent the whole input); OPA compiles the policy.
        paths = self.settings.overlay_path
        return RegoPolicy(
            self.settings.rego_path,
            overlays=overlay.load(paths, embedded=False) if paths else None,
        )

    def loaded(self, policy: RegoPolicy) -> None:
        self._no_batch = self._no_groups = False
        self._request_warm_up()

    def input_for(
        self, rule: str, creds: Mapping[str, Any], target: Mapping[str, Any]
    ) -> dict[str, Any]:
        doc = super().input_for(rule, creds, target)
        if self._unknown_overlays:
            # OPA holds overlays this service was not told about: they
            # may read any key.
            return inputs.document(creds, target, rule)
        return doc

    # --- deciding ------------------------------------------------------------

    def decide(self, rule: str, input_doc: Mapping[str, Any]) -> bool:
        policy = self._policy
        if policy is None:
            policy = self._current()
        entry = policy.manifest.rules.get(rule)
        if entry is None:
            raise DecisionError(f'rule {rule!r} is not in the manifest')
        if self._open or self._closed.is_set():
            raise DecisionError(self._not_asking(rule))
        try:
            body = _encode({'input': input_doc}).encode('ascii')
        except (TypeError, ValueError) as e:
            raise DecisionError(
                f'rule {rule!r}: the input is not JSON ({type(e).__name__})'
            ) from None
        start = time.monotonic()
        try:
            status, data = self.transport.request(
                'POST', f'/v1/data/{entry.path}{self._query}', body
            )
        except TransportError as e:
            self._trip(e)
            raise DecisionError(
                f'rule {rule!r}: OPA at {self.url}: {e} (after '
                f'{time.monotonic() - start:.3f}s)'
            ) from None
        if self._trips:
            self._trips = 0
        if self.transport.num_dropped != self._dropped_seen:
            # OPA closed idle connections: restarted, most likely, and
            # its prepared queries are gone.
            self._dropped_seen = self.transport.num_dropped
            self._request_warm_up()
        result = _PLAIN.get(data) if status == 200 else None
        decision_id = None
        if result is None:
            result, decision_id = _decision(rule, entry.path, status, data)
        notes.last.route = 'remote'
        notes.last.decision_id = decision_id
        if LOG.isEnabledFor(logging.DEBUG):
            LOG.debug(
                'oslo.opa: rule %r: %s from OPA in %.2f ms (decision_id %s)',
                rule,
                'allow' if result else 'deny',
                (time.monotonic() - start) * 1e3,
                decision_id,
            )
        return result

    def close(self) -> None:
        self._closed.set()
        self.transport.close()


def _decision(
    rule: str, path: str, status: int, data: bytes
) -> tuple[bool, Any]:
    """(allow, decision_id) from OPA's answer.

    :raises DecisionError: the answer is not a boolean decision.
    """
    if status != 200:
        raise DecisionError(
            f'rule {rule!r}: OPA answered HTTP {status}{_opa_code(data)}'
        )
    try:
        doc = json.loads(data)
    except ValueError:
        raise DecisionError(
            f'rule {rule!r}: OPA answered with invalid JSON'
        ) from None
    if not isinstance(doc, dict):
        raise DecisionError(
            f'rule {rule!r}: OPA answered with unexpected JSON'
        )
    if 'result' not in doc:
        raise DecisionError(
            f'rule {rule!r}: {path} is undefined in OPA (is the policy '
            f'loaded? see oslo-opa status)'
        )
    result = doc['result']
    if result is not True and result is not False:
        raise DecisionError(f'rule {rule!r}: allow is not a boolean')
    return result, doc.get('decision_id')


def _opa_code(data: bytes) -> str:
    """OPA's error code from an error answer (its message may hold data)."""
    try:
        doc = json.loads(data)
    except ValueError:
        return ''
    code = doc.get('code') if isinstance(doc, dict) else None
    if isinstance(code, str) and code.replace('_', '').isalnum():
        return f' ({code})'
    return ''
