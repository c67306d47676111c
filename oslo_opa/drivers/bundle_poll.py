"""The embedded driver following a bundle server (``bundle_url``).

One daemon thread per process downloads the bundle every
``bundle_polling_interval`` seconds (with a tenth of jitter, so that the
workers of a fleet do not ask at the same instant), with
``If-None-Match``: a request never waits for a download.  A new bundle
is read (``bundle_fetch``), checked (``bundle_check``: signature, roots,
contents), written out as a converted directory, loaded and compiled
(what the manifest does not vouch for) and only then put in force by the
driver, in one assignment (``EmbeddedDriver.activate_bundle``): a
decision sees the old policy or the new one, never a mix.  Then it is
persisted (``bundle_store``): a worker started while the server is down
starts from it (:meth:`BundlePoller.restore`).

Any failure keeps the policy in force and is logged in one line naming
the URL and the reason, once per distinct reason; a refused bundle is
not downloaded again while the server answers its ETag with 304.

Threads do not survive ``fork``: an API worker forked from a parent that
polled inherits the policy, and starts its own thread on its first
decision.  Under eventlet's monkey patching the thread is a green thread
and requests' sockets are green.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
import random
import socket
import threading
import urllib.parse
import weakref
from collections.abc import Mapping
from typing import Any

from oslo_opa import bundle_check, bundle_fetch, metrics
from oslo_opa.bundle_store import BundleStore, digest
from oslo_opa.errors import OsloOpaError

# The embedded driver's logger: operators configure one name per driver.
LOG = logging.getLogger('oslo_opa.drivers.embedded')

_pollers: weakref.WeakSet[BundlePoller] = weakref.WeakSet()


def default_cache_dir(url: str) -> str:
    """Where bundles from url are kept unless bundle_cache_dir says."""
    name = hashlib.sha256(url.encode('utf-8')).hexdigest()[:16]
    return os.path.join(
        os.path.expanduser('~'), '.cache', 'oslo-opa', 'bundles', name
    )


def safe_url(url: str) -> str:
    """url without credentials, for logs and status files."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ''
    if parts.port:
        host = f'{host}:{parts.port}'
    return urllib.parse.urlunsplit(parts._replace(netloc=host))


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec='seconds'
    )


class BundlePoller:
    """Downloads, checks and activates one driver's bundle.

    :param driver: provides ``activate_bundle(directory)`` (loads it and
        puts it in force, or raises PolicyLoadError) and ``generation``.
    """

    def __init__(
        self,
        driver: Any,
        url: str,
        key_file: str | None = None,
        interval: float = 60.0,
        cache_dir: str | None = None,
        scope: str | None = None,
    ) -> None:
        self.driver = driver
        self.scope = scope or None
        self.url = url
        self.shown_url = safe_url(url)
        self.key_file = key_file
        self.interval = interval
        self.fetcher = bundle_fetch.Fetcher(url)
        self.store = BundleStore(cache_dir or default_cache_dir(url))
        # The bundle in force: its sha256, ETag and revisions.
        self.active: dict[str, Any] = {}
        # The last refused download: (etag, sha256, key, reason).
        self._refused: tuple[str | None, str, bytes | None, str] | None = None
        self.last_error: str | None = None
        self.last_error_at: str | None = None
        self.checked_at: str | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._start_lock = threading.Lock()
        self._activated = threading.Event()
        _pollers.add(self)

    # --- the thread ----------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        """Start polling in this process (again after a fork)."""
        with self._start_lock:
            if self._thread is not None or self._stop.is_set():
                return
            self._thread = threading.Thread(
                target=self._run, name='oslo-opa-bundle', daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - the thread must live on
                LOG.exception('oslo.opa: polling %s failed', self.shown_url)
            # Jitter spreads a fleet's polls; nothing secret about it.
            delay = self.interval * random.uniform(0.9, 1.1)  # noqa: S311
            if self._stop.wait(delay):
                return

    def close(self, timeout: float = 0.1) -> None:
        """Stop polling; remove this process's status file.

        Called on the request path when the configuration changes: a
        download in progress is not waited for (its thread exits after
        it, without writing a status)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self.fetcher.close()
        self.store.remove_status()

    def _forked(self) -> None:
        # The parent's thread and connections are not ours.
        self._thread = None
        self._start_lock = threading.Lock()
        self.fetcher._session = None
        lock = getattr(self.driver, '_reload_lock', None)
        if lock is not None and lock.locked():
            # Held by the parent's poller, mid-activation: that thread
            # does not exist here and would never release it.
            self.driver._reload_lock = threading.Lock()

    def wait_activated(self, timeout: float | None = None) -> bool:
        """Wait until a bundle is in force (True) or timeout."""
        return self._activated.wait(timeout)

    # --- one poll ------------------------------------------------------

    def _key(self) -> bytes | None:
        if not self.key_file:
            return None
        from oslo_opa import bundle_signing

        return bundle_signing.read_key(self.key_file)

    def poll_once(self) -> bool:
        """Download and, when new and good, activate; never raises for
        a bad bundle or server.  True when a new bundle went in force."""
        self.checked_at = _now()
        try:
            key = self._key()
        except (OSError, OsloOpaError) as e:
            return self._failed(f'cannot read bundle_verification_key: {e}')
        refused = self._refused
        if refused is not None and refused[2] != key:
            refused = self._refused = None  # another key: try it again
        etag = refused[0] if refused else self.active.get('etag')
        try:
            got = self.fetcher.get(etag)
        except bundle_fetch.FetchError as e:
            return self._failed(f'cannot download it: {e}')
        sha = None if got.raw is None else digest(got.raw)
        if refused is not None and (sha is None or sha == refused[1]):
            # Still the refused bundle (a 304 for its ETag, or the same
            # bytes from a server without ETags): still refused.
            return self._failed(f'refused: {refused[3]}')
        if sha is None or sha == self.active.get('sha256'):
            # Still the bundle in force (or it again, after a refused
            # one: then asked for by its ETag again, not the refused
            # one's, which would download it at every poll).
            self._refused = None
            self.active['etag'] = got.etag or self.active.get('etag')
            self._ok()
            self._write_status()
            return False
        try:
            checked = bundle_check.check(
                bundle_fetch.read_tarball(got.raw), key, scope=self.scope
            )
            directory = self.store.write_out(sha, checked.files)
            self.driver.activate_bundle(directory)
        except OSError as e:
            # The cache directory (full, not writable): not the bundle's
            # fault, so tried again at the next poll.
            return self._failed(
                f'cannot be written to {self.store.directory}: {e}'
            )
        except OsloOpaError as e:
            self._refused = (got.etag, sha, key, str(e))
            metrics.reload(False, metrics.driver_label(self.driver))
            return self._failed(f'refused: {e}')
        self._activated_now(sha, got.etag, checked, 'download')
        try:
            self.store.commit(got.raw, self.active)
        except OSError as e:
            LOG.error(
                'oslo.opa: bundle %s revision %s is in force but could not '
                'be kept in %s (a restart without the server would not '
                'have it): %s',
                self.shown_url,
                checked.revision,
                self.store.directory,
                e,
            )
        self._write_status()
        return True

    def restore(self) -> str | None:
        """Activate the persisted bundle, checked again; its directory,
        or None (none kept, or it fails a check: then logged)."""
        pointer = self.store.pointer()
        if not pointer or pointer.get('url') != self.shown_url:
            return None
        try:
            sha = str(pointer['sha256'])
            raw = self.store.tarball(sha)
            checked = bundle_check.check(
                bundle_fetch.read_tarball(raw), self._key(), scope=self.scope
            )
            directory = self.store.write_out(sha, checked.files)
            self.driver.activate_bundle(directory)
        except (OsloOpaError, OSError, KeyError) as e:
            LOG.error(
                'oslo.opa: the bundle kept in %s cannot be used (%s); '
                'waiting for %s',
                self.store.directory,
                e,
                self.shown_url,
            )
            return None
        self._activated_now(sha, pointer.get('etag'), checked, 'cache')
        self.active['activated_at'] = pointer.get('activated_at')
        self._write_status()
        return directory

    # --- bookkeeping ---------------------------------------------------

    def _activated_now(
        self,
        sha: str,
        etag: str | None,
        checked: bundle_check.Checked,
        source: str,
    ) -> None:
        self.active = {
            'url': self.shown_url,
            'sha256': sha,
            'etag': etag,
            'revision': checked.revision,
            'conversion_revision': checked.conversion,
            'roots': list(checked.roots),
            'signed': checked.signed,
            'activated_at': _now(),
            'source': source,
        }
        self._refused = None
        self._ok()
        self._activated.set()
        LOG.info(
            'oslo.opa: bundle %s revision %s (conversion %s, %s) in force, '
            'from %s',
            self.shown_url,
            checked.revision or '(none)',
            checked.conversion or '(none)',
            'signed' if checked.signed else 'unsigned',
            'the server' if source == 'download' else self.store.directory,
        )

    def _ok(self) -> None:
        if self.last_error is not None:
            LOG.warning(
                'oslo.opa: bundle %s: polling succeeds again',
                self.shown_url,
            )
        self.last_error = self.last_error_at = None

    def _failed(self, reason: str) -> bool:
        # One line per distinct reason, not one per poll.
        said = reason == self.last_error
        self.last_error, self.last_error_at = reason, _now()
        in_force = self.active.get('revision')
        keeps = (
            f'revision {in_force or "(none)"} stays in force'
            if self.active
            else 'no bundle in force yet: decisions fail (failure_mode)'
        )
        if not said:
            LOG.error(
                'oslo.opa: bundle %s %s; %s', self.shown_url, reason, keeps
            )
        self._write_status()
        return False

    def status(self) -> dict[str, Any]:
        """What ``status/<pid>.json`` holds: ``bundles``, the section of
        OPA's ``GET /v1/status`` that ``oslo-opa status --fleet
        file://...`` reads (the bundle named by the conversion's package
        prefix, as ``oslo-opa opa-config --bundle`` names a service's),
        and this poller's own details."""
        manifest = getattr(self.driver, 'manifest', None)
        name = manifest.package_prefix if manifest is not None else 'oslo_opa'
        section: dict[str, Any] = {}
        if self.active:
            section['active_revision'] = self.active.get('revision')
            section['last_successful_activation'] = self.active.get(
                'activated_at'
            )
        if self.last_error:
            section['code'] = 'bundle_error'
            section['message'] = self.last_error
            section['errors'] = [self.last_error]
        return {
            'bundles': {name: section},
            'url': self.shown_url,
            'host': socket.gethostname(),
            'pid': os.getpid(),
            'driver': metrics.driver_label(self.driver),
            'generation': self.driver.generation,
            'active': dict(self.active) or None,
            'checked_at': self.checked_at,
            'last_error': self.last_error,
            'last_error_at': self.last_error_at,
            'polling_interval': self.interval,
            'cache_dir': self.store.directory,
        }

    def _write_status(self) -> None:
        if not self._stop.is_set():
            self.store.write_status(self.status())


def from_settings(
    driver: Any, options: Mapping[str, Any]
) -> BundlePoller | None:
    """The poller options ask for (None without bundle_url)."""
    url = options.get('bundle_url')
    if not url:
        return None
    return BundlePoller(
        driver,
        url,
        key_file=options.get('bundle_verification_key'),
        interval=float(options.get('bundle_polling_interval') or 60.0),
        cache_dir=options.get('bundle_cache_dir'),
        scope=options.get('bundle_verification_scope'),
    )


def _after_fork() -> None:
    for poller in list(_pollers):
        poller._forked()


if hasattr(os, 'register_at_fork'):
    os.register_at_fork(after_in_child=_after_fork)
