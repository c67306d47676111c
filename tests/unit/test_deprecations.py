"""oslo.policy's upgrade warnings survive delegation.

With the delegation file every rule counts as overridden, so oslo.policy
says nothing about deprecated rules at load.  ``oslo-opa convert``
reports what oslo.policy warns for the same configuration, in its own
words, the manifest carries it, and the ``opa`` check warns it in turn
on the first load of the converted directory (once per process).
"""

from __future__ import annotations

import warnings

import pytest
from oslo_config import cfg
from oslo_policy import policy as oslo_policy

from oslo_opa import cli, decider
from oslo_opa.drivers import base
from tests import corpus


def _oslo_policys_own(service: str, new_defaults: bool) -> list[str]:
    """What an Enforcer with the service's defaults warns at load."""
    conf = cfg.ConfigOpts()
    conf(args=[], default_config_files=[])
    enforcer = oslo_policy.Enforcer(conf)
    conf.set_override('policy_dirs', [], 'oslo_policy')
    conf.set_override('enforce_new_defaults', new_defaults, 'oslo_policy')
    enforcer.register_defaults(corpus.defaults(service))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        enforcer.load_rules()
    return sorted({str(w.message) for w in caught})


@pytest.mark.parametrize('new_defaults', [False, True])
def test_convert_reports_and_the_check_warns_what_oslo_policy_would(
    tmp_path, corpus_entry_points, capsys, monkeypatch, new_defaults
):
    expected = _oslo_policys_own('keystone', new_defaults)
    if not new_defaults:
        assert expected  # keystone changed defaults: there is something
    out = str(tmp_path / 'out')
    flag = (
        '--enforce-new-defaults'
        if new_defaults
        else ('--no-enforce-new-defaults')
    )
    code = cli.main(
        ['convert', '--namespace', corpus.namespace('keystone'), flag,
         '--no-tests', '-o', out]
    )  # fmt: skip
    assert code == 0
    err = capsys.readouterr().err
    prefix = 'oslo-opa: oslo.policy warns: '
    assert err.count(prefix) == len(expected)
    for text in expected:  # messages may span lines
        assert f'{prefix}{text}\n' in err
    monkeypatch.setattr(base, '_warned', set())
    for attempt in range(2):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            d = decider.load(out)
            d.decide('identity:get_project', {}, {'roles': ['reader']})
            d.close()
        warned = sorted(str(w.message) for w in caught)
        # Once per process: the second load says nothing again.
        assert warned == (expected if attempt == 0 else [])
