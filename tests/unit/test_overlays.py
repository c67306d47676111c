"""Overlays: what is refused and why, where they apply, what they cost.

The differential proof against oslo.policy is test_overlay_differential;
here: bad overlay files (each refused naming the file and line, nothing
allowed by accident), warnings for rules that do not exist, projection,
reloads (overlays and data without compiling the converted policy), hand
edits read consistently through rule:, and the way back from a policy
change (convert again, overlays kept).
"""

from __future__ import annotations

import json
import logging
import os
import shutil

import pytest

from oslo_opa import bundler, decider, overlay
from oslo_opa.convert import convert, load_rule_table
from oslo_opa.engine import RegoPolicy
from oslo_opa.errors import PolicyLoadError, StrictModeError
from tests import overlays
from tests.corpus import policy_file
from tests.differential import enforcer_for, oslo_decision

KEYSTONE = policy_file('keystone')
SUSPEND = """package oslo_opa.overlay

deny["*"] contains "suspended" if "suspended" in input.credentials.roles
"""


@pytest.fixture(scope='module')
def keystone(tmp_path_factory):
    out = str(tmp_path_factory.mktemp('ks') / 'out')
    convert(out, policy_files=[KEYSTONE], tests=False)
    return out


def _write(directory, name, text):
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name)
    with open(path, 'w', encoding='utf-8') as f:
        f.write(text)
    return path


def _overlaid(keystone, directory, text):
    """(path, RegoPolicy of keystone) with text as its one overlay."""
    path = _write(directory, 'overlay.rego', text)
    return path, RegoPolicy(keystone, overlays=overlay.load([path]))


def _decide(policy, rule, creds, target=None):
    doc = policy.input_for(rule, creds, target or {})
    return policy.evaluate(rule, doc)


# --- what is refused ----------------------------------------------------


@pytest.mark.parametrize(
    'text, line, message',
    [
        (
            'package oslo_opa.overlay\n\ndeny["*"] contains "x" if {\n',
            None,
            'does not compile',
        ),
        ('package overlays\n\ndeny["*"] contains "x"\n', 1, 'package'),
        (
            'package oslo_opa.overlay.sub\n\ndeny["*"] contains "x"\n',
            1,
            'package',
        ),
        ('package oslo_opa.overlay\n\ndeny := true\n', 3, 'set of reasons'),
        (
            'package oslo_opa.overlay\n\ndeny["a"] := "why"\n',
            3,
            'set of reasons',
        ),
        (
            'package oslo_opa.overlay\n\ndeny["a"] if true\n',
            3,
            'set of reasons',
        ),
        (
            'package oslo_opa.overlay\n\ndeny contains "why"\n',
            3,
            'needs a rule name',
        ),
        (
            'package oslo_opa.overlay\n\n\nallow := true\n',
            4,
            'defines allow',
        ),
        (
            'package oslo_opa.overlay\n\ndefault deny := {}\n',
            3,
            'defines deny',
        ),
        (
            'package oslo_opa.overlay\n\ngrant["a"] contains "x" if '
            'data.keystone.admin_required.allow\n',
            3,
            'cannot read the converted rules',
        ),
        (
            'package oslo_opa.overlay\n\ngrant["a"] contains "x" if '
            'data[input.k]\n',
            3,
            'reads data as a whole',
        ),
        (
            'package oslo_opa.overlay\n\ngrant["a"] contains "x" if '
            'input.credentials.user_id == "o\\"brien"\n',
            3,
            'backslash',
        ),
    ],
)
def test_a_bad_overlay_is_refused_naming_file_and_line(
    tmp_path, keystone, text, line, message
):
    path = _write(str(tmp_path / 'ov'), 'bad.rego', text)
    with pytest.raises(PolicyLoadError) as e:
        policy = RegoPolicy(keystone, overlays=overlay.load([path]))
        policy.validate()
    where = f'{path}:{line}' if line else path
    assert where in str(e.value)
    assert message in str(e.value)


def test_a_compile_error_names_row_and_column(tmp_path, keystone):
    path, policy = _overlaid(
        keystone,
        str(tmp_path / 'ov'),
        'package oslo_opa.overlay\n\ndeny["*"] contains "x" if {\n'
        '\tinput.credentials.x ==\n}\n',
    )
    with pytest.raises(PolicyLoadError) as e:
        policy.validate()
    # A row and a column, not regopy's byte offsets.
    assert f'{path}:4:' in str(e.value) or f'{path}:5:' in str(e.value)
    assert '|' not in str(e.value)


def test_a_rule_that_does_not_exist_warns_naming_file_and_rule(
    tmp_path, keystone
):
    path, policy = _overlaid(
        keystone,
        str(tmp_path / 'ov'),
        'package oslo_opa.overlay\n\n'
        'deny["identity:gone"] contains "x" if true\n',
    )
    assert len(policy.warnings) == 1
    assert f'{path}:3' in policy.warnings[0]
    assert "'identity:gone'" in policy.warnings[0]
    with pytest.raises(StrictModeError) as e:
        RegoPolicy(keystone, overlays=overlay.load([path]), strict=True)
    assert "'identity:gone'" in str(e.value)


def test_nothing_allows_when_the_first_overlay_is_bad(tmp_path, keystone):
    """A driver whose overlay does not load decides nothing: it denies."""
    odir = str(tmp_path / 'ov')
    _write(odir, 'bad.rego', 'package oslo_opa.overlay\n\nallow := true\n')
    d = decider.load(keystone, overlay_path=[odir], reload_interval=0)
    admin = {'roles': ['admin'], 'system_scope': 'all'}
    assert d.decide('identity:list_projects', {}, admin) is False
    # The same without the overlay allows: the deny above is the refusal.
    d.close()
    d = decider.load(keystone, reload_interval=0)
    assert d.decide('identity:list_projects', {}, admin) is True
    d.close()


def test_a_bad_overlay_on_reload_keeps_the_previous_policy(
    tmp_path, keystone, caplog
):
    odir = str(tmp_path / 'ov')
    path = _write(odir, 'suspend.rego', SUSPEND)
    d = decider.load(keystone, overlay_path=[odir], reload_interval=0)
    suspended = {'roles': ['admin', 'suspended'], 'system_scope': 'all'}
    assert d.decide('identity:list_projects', {}, suspended) is False
    generation = d.driver.generation
    with open(path, 'w') as f:
        f.write(SUSPEND.replace('deny["*"]', 'deny := 1 #'))
    with caplog.at_level(logging.ERROR, 'oslo_opa'):
        assert d.decide('identity:list_projects', {}, suspended) is False
    assert d.driver.generation == generation
    assert 'the previous one stays in force' in caplog.text
    assert f'{path}:3' in caplog.text
    d.close()


def test_an_old_conversion_refuses_overlays(tmp_path, keystone):
    """A directory converted before overlays existed never consults
    them: using overlays with it would silently ignore them."""
    out = str(tmp_path / 'old')
    shutil.copytree(keystone, out)
    manifest = os.path.join(out, 'manifest.json')
    with open(manifest) as f:
        doc = json.load(f)
    del doc['overlay_hooks']
    with open(manifest, 'w') as f:
        json.dump(doc, f)
    path = _write(str(tmp_path / 'ov'), 's.rego', SUSPEND)
    with pytest.raises(PolicyLoadError, match='convert the policy again'):
        RegoPolicy(out, overlays=overlay.load([path]))
    RegoPolicy(out)  # without overlays it loads


# --- where overlays apply -------------------------------------------------


def test_only_rules_an_overlay_can_touch_get_what_it_reads(tmp_path, keystone):
    path, policy = _overlaid(
        keystone,
        str(tmp_path / 'ov'),
        'package oslo_opa.overlay\n\n'
        'deny["admin_required"] contains "x" if input.credentials.z\n',
    )
    creds = {'roles': ['reader'], 'z': True, 'unrelated': 1}
    # identity:get_project reads admin_required: its keys and the
    # overlay's.
    doc = policy.input_for('identity:get_project', creds, {'q': 1})
    assert doc['credentials']['z'] is True
    assert doc['credentials']['roles'] == ['reader']
    assert 'unrelated' not in doc['credentials']
    # identity:get_region does not: projected as before.
    doc = policy.input_for('identity:get_region', creds, {'q': 1})
    assert 'z' not in doc['credentials'] and doc['target'] == {}
    # A key computed from the input may name any rule: every rule.
    path, policy = _overlaid(
        keystone,
        str(tmp_path / 'ov2'),
        'package oslo_opa.overlay\n\n'
        'deny[input.rule] contains "x" if input.credentials.z\n',
    )
    doc = policy.input_for('identity:get_region', creds, {'q': 1})
    assert doc['credentials']['z'] is True
    assert _decide(policy, 'identity:get_region', creds) is False
    assert _decide(policy, 'identity:get_region', {'roles': ['x']}) is True


def test_an_overlay_reading_any_key_gets_the_whole_input(tmp_path, keystone):
    path, policy = _overlaid(
        keystone,
        str(tmp_path / 'ov'),
        'package oslo_opa.overlay\n\n'
        'deny["*"] contains "x" if {\n'
        '\tsome k, v in input.credentials\n'
        '\tendswith(k, "_flag")\n'
        '\tv == true\n'
        '}\n',
    )
    creds = {'roles': ['admin'], 'system_scope': 'all', 'odd_flag': True}
    doc = policy.input_for('identity:list_projects', creds, {'q': 1})
    assert doc['credentials'] == creds and doc['target'] == {'q': 1}
    assert _decide(policy, 'identity:list_projects', creds) is False
    del creds['odd_flag']
    assert _decide(policy, 'identity:list_projects', creds) is True


def test_an_overlay_in_the_converted_directory_is_honoured(tmp_path, keystone):
    out = str(tmp_path / 'out')
    shutil.copytree(keystone, out)
    _write(out, 'my_overlay.rego', SUSPEND)
    policy = RegoPolicy(out)
    policy.validate()
    creds = {'roles': ['admin', 'suspended'], 'system_scope': 'all'}
    assert _decide(policy, 'identity:list_projects', creds) is False
    creds['roles'] = ['admin']
    assert _decide(policy, 'identity:list_projects', creds) is True


# --- hand edits, read through rule: ---------------------------------------


def test_a_hand_edit_holds_for_readers_on_every_path(tmp_path, keystone):
    """Edit a rule that others read; compare the readers' decisions with
    oslo.policy's for the same edit, on fast-path and three-valued
    inputs (credentials holding lists of several items, dicts, None)."""
    out = str(tmp_path / 'out')
    shutil.copytree(keystone, out)
    overlays.edit_admin_required(out)
    policy = RegoPolicy(out)
    table = load_rule_table(policy_files=[KEYSTONE])
    enforcer = enforcer_for(overlays.edited_table(table))
    readers = [
        r
        for r, e in policy.manifest.rules.items()
        if 'admin_required' in policy.manifest.closure(r)
        and r != 'admin_required'
    ]
    assert len(readers) > 50
    mismatches = []
    compared = 0
    for rule in readers[::3]:
        for creds, target in overlays.inputs_for(table, rule, 3):
            if isinstance(creds.get('roles'), list) and len(creds) % 2:
                creds = {**creds, 'roles': [*creds['roles'], 'suspended']}
            want = oslo_decision(enforcer, rule, creds, target)
            got = _decide(policy, rule, creds, target)
            compared += 1
            if want != got:
                mismatches.append((rule, creds, target, want, got))
    assert compared > 300
    assert not mismatches, mismatches[:5]


def test_the_issues_example_denies_on_every_path(tmp_path, keystone):
    out = str(tmp_path / 'out')
    shutil.copytree(keystone, out)
    overlays.edit_admin_required(out)
    policy = RegoPolicy(out)
    suspended_admin = {'roles': ['admin', 'suspended']}
    for extra in ({}, {'project_id': ['p1', 'p2']}, {'domain_id': {'a': 1}}):
        creds = {**suspended_admin, **extra}
        assert _decide(policy, 'admin_required', creds) is False
        assert (
            _decide(
                policy,
                'identity:get_project',
                creds,
                {'target.project.id': 'p9'},
            )
            is False
        ), extra
        # And an admin still passes on the same path.
        creds['roles'] = ['admin']
        assert (
            _decide(
                policy,
                'identity:get_project',
                creds,
                {'target.project.id': 'p9'},
            )
            is True
        ), extra


# --- reloads --------------------------------------------------------------


class _Compiles:
    """Counts what the engine compiles (a spy: the compile still runs)."""

    def __init__(self, monkeypatch):
        self.whats: list[str] = []
        real = bundler.Bundler.compile

        def spy(this, texts, entrypoints, what, data_json=None):
            self.whats.append(what)
            return real(this, texts, entrypoints, what, data_json)

        monkeypatch.setattr(bundler.Bundler, 'compile', spy)


def test_data_and_overlays_reload_without_compiling_the_policy(
    tmp_path, keystone, monkeypatch
):
    odir = str(tmp_path / 'ov')
    _write(
        odir,
        'p.rego',
        'package oslo_opa.overlay\n\n'
        'deny["identity:delete_project"] contains "protected" if '
        'data.protected[input.target["target.project.id"]]\n',
    )
    data = str(tmp_path / 'data.json')
    with open(data, 'w') as f:
        json.dump({'protected': {'p1': True}}, f)
    compiles = _Compiles(monkeypatch)
    d = decider.load(
        keystone,
        overlay_path=[odir],
        data_path=[data],
        reload_interval=0,
        cache_size=0,
    )
    admin = {'roles': ['admin'], 'system_scope': 'all'}
    rule = 'identity:delete_project'
    assert d.decide(rule, {'target.project.id': 'p1'}, admin) is False
    assert d.decide(rule, {'target.project.id': 'p2'}, admin) is True
    # The converted Rego: loaded as the conversion compiled it.
    converted = [w for w in compiles.whats if w != 'the overlays']
    # New data: applied, the policy not compiled again.
    with open(data, 'w') as f:
        json.dump({'protected': {'p2': True, 'pad': 'x' * 10}}, f)
    assert d.decide(rule, {'target.project.id': 'p1'}, admin) is True
    assert d.decide(rule, {'target.project.id': 'p2'}, admin) is False
    # A new overlay: the same.
    _write(odir, 's.rego', SUSPEND)
    suspended = {**admin, 'roles': ['admin', 'suspended']}
    assert d.decide(rule, {'target.project.id': 'p1'}, suspended) is False
    # Nothing of the converted Rego was compiled again...
    assert [w for w in compiles.whats if w != 'the overlays'] == converted
    # ... while the overlays were compiled again for each change.
    assert compiles.whats.count('the overlays') >= 3
    d.close()


# --- the way back from a policy change ------------------------------------


def test_converting_again_keeps_the_overlays(tmp_path):
    """Convert keystone, add an overlay, convert again from a changed
    policy.yaml (one rule changed, one removed): the overlay still
    applies, and the removed rule's overlay warns."""
    out = str(tmp_path / 'out')
    convert(out, policy_files=[KEYSTONE], tests=False)
    odir = str(tmp_path / 'overlays')
    _write(
        odir,
        'x.rego',
        SUSPEND + '\ngrant["identity:get_region"] contains "g" if '
        'input.credentials.user_id == "u-g"\n',
    )
    d = decider.load(out, overlay_path=[odir], reload_interval=0)
    assert d.decide('identity:get_region', {}, {'user_id': 'u-g'}) is True
    changed = str(tmp_path / 'policy.yaml')
    with open(KEYSTONE) as f:
        lines = [
            line for line in f if not line.startswith('identity:get_region:')
        ]
    lines = [
        'identity:list_projects: role:nobody\n'
        if line.startswith('identity:list_projects:')
        else line
        for line in lines
    ]
    with open(changed, 'w') as f:
        f.writelines(lines)
    conv = convert(out, policy_files=[changed], tests=False)
    assert 'identity:get_region' not in conv.rules
    assert os.listdir(odir) == ['x.rego']  # convert never touches them
    policy = RegoPolicy(out, overlays=overlay.load([odir]))
    assert any("'identity:get_region'" in w for w in policy.warnings)
    # The overlay still applies to the new policy.
    creds = {'roles': ['nobody', 'suspended']}
    assert d.decide('identity:list_projects', {}, creds) is False
    assert d.decide('identity:list_projects', {}, {'roles': ['nobody']})
    d.close()
