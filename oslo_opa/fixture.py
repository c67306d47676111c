"""A fixture for services' own unit tests, in oslo_policy.fixture's style.

::

    from oslo_opa import fixture

    def test_only_admins_delete(self):
        rego = self.useFixture(fixture.RegoPolicy('/etc/keystone/opa'))
        rego.override_rule('identity:delete_project', 'allow := true')
        self.assertTrue(rego.decide('identity:delete_project', {}, creds))

The converted directory is copied for the test, so overrides never touch
the original, and everything is removed at cleanup.  ``conf`` wiring for
an Enforcer: :meth:`RegoPolicy.configure` points ``[oslo_opa]`` at the
copy.  Needs the ``fixtures`` package (a test requirement of every
OpenStack service).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

import fixtures

from oslo_opa import check, decider, opts
from oslo_opa import manifest as manifest_mod
from oslo_opa.rego_enforcement import RegoEnforcement

__all__ = ['RegoEnforcement', 'RegoPolicy']


class RegoPolicy(fixtures.Fixture):
    """A private copy of a converted directory, decided in-process.

    :param rego_path: the output of ``oslo-opa convert``.
    :param data: a document for Rego's ``data`` (see :meth:`set_data`).
    :param overlay_path: overlay directories (see :mod:`oslo_opa.overlay`),
        applied as ``[oslo_opa] overlay_path`` applies them; they read
        the data :meth:`set_data` sets.
    """

    def __init__(
        self,
        rego_path: str,
        data: Mapping[str, Any] | None = None,
        overlay_path: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.source = rego_path
        self.initial_data = dict(data or {})
        self.overlay_path = list(overlay_path)

    def _setUp(self) -> None:
        tmp = self.useFixture(fixtures.TempDir()).path
        self.path = os.path.join(tmp, 'policy')
        shutil.copytree(self.source, self.path)
        self.data_file = os.path.join(tmp, 'data.json')
        self.set_data(self.initial_data)
        self.manifest = manifest_mod.load(self.path)
        self.decider = decider.load(
            self.path,
            data_path=[self.data_file],
            overlay_path=self.overlay_path,
            cache_size=0,
            reload_interval=0,
        )
        self.addCleanup(self.decider.close)
        self.addCleanup(check.reset)

    def override_rule(self, rule: str, body: str) -> None:
        """Replace rule's Rego for this test.

        body is the module's rules (``allow := true``, or ``allow if
        input.credentials.user_id == "u1"``); the package line is kept.
        The rule is then hand-edited: it receives the whole input.
        """
        entry = self.manifest.rules[rule]
        path = os.path.join(self.path, entry.module)
        with open(path, encoding='utf-8') as f:
            package = next(line for line in f if line.startswith('package '))
        with open(path, 'w', encoding='utf-8') as f:
            f.write(f'{package.strip()}\n\n{body}\n')
        if entry.fast_module:
            # body is all of the rule's Rego: its fast path goes too.
            fast = os.path.join(self.path, entry.fast_module)
            if os.path.exists(fast):
                os.unlink(fast)

    def set_data(self, doc: Mapping[str, Any]) -> None:
        """Replace the ``data`` document (picked up on the next decision,
        without compiling the converted Rego again)."""
        with open(self.data_file, 'w', encoding='utf-8') as f:
            json.dump(dict(doc), f)

    def decide(self, rule: str, target: Mapping[str, Any], creds: Any) -> bool:
        """The decision, as the embedded driver makes it."""
        return self.decider.decide(rule, target, creds)

    def configure(self, conf: Any) -> None:
        """Point conf's ``[oslo_opa]`` at this copy, for an Enforcer."""
        opts.register_opts(conf)
        conf.set_override('driver', 'embedded', 'oslo_opa')
        conf.set_override('rego_path', self.path, 'oslo_opa')
        conf.set_override('data_path', [self.data_file], 'oslo_opa')
        conf.set_override('overlay_path', self.overlay_path, 'oslo_opa')
        conf.set_override('cache_size', 0, 'oslo_opa')
        conf.set_override('reload_interval', 0.0, 'oslo_opa')
        self.addCleanup(conf.clear_override, 'driver', 'oslo_opa')
        self.addCleanup(conf.clear_override, 'rego_path', 'oslo_opa')
        self.addCleanup(conf.clear_override, 'data_path', 'oslo_opa')
        self.addCleanup(conf.clear_override, 'overlay_path', 'oslo_opa')
        self.addCleanup(conf.clear_override, 'cache_size', 'oslo_opa')
        self.addCleanup(conf.clear_override, 'reload_interval', 'oslo_opa')
        check.reset(conf)

    @property
    def delegation_file(self) -> str:
        """The copy's delegation policy file (``policy.yaml``)."""
        return os.path.join(self.path, 'policy.yaml')
