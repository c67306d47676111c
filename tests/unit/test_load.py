"""What loading a converted directory compiles, and what it still catches.

The manifest records the SHA-256 of every module and library file as the
converter wrote them.  A load compiles none of the files that still
match (their bundles are built as decisions need them), and compiles at
once what the manifest cannot vouch for: a hand-edited rule (with the
rules it reads), a library file that differs, a module of the
operator's beside the converted ones.  So a broken edit is refused at
load, naming the file and line, before any decision.
"""

from __future__ import annotations

import os

import pytest

from oslo_opa import bundler, decider
from oslo_opa.convert import convert
from oslo_opa.engine import RegoPolicy
from oslo_opa.errors import PolicyLoadError
from tests import policies


@pytest.fixture
def converted(tmp_path):
    return policies.converted(str(tmp_path), policies.THINGS)


@pytest.fixture
def compiles(monkeypatch):
    """What the engine compiles (a spy: the compile still runs)."""
    whats: list[str] = []
    real = bundler.Bundler.compile

    def spy(this, texts, entrypoints, what, data_json=None):
        whats.append(what)
        return real(this, texts, entrypoints, what, data_json)

    monkeypatch.setattr(bundler.Bundler, 'compile', spy)
    return whats


def _edit(out, rel, old, new):
    path = os.path.join(out, rel)
    with open(path) as f:
        text = f.read()
    assert old in text
    with open(path, 'w') as f:
        f.write(text.replace(old, new, 1))
    return path


def test_an_unedited_directory_compiles_nothing_at_load(converted, compiles):
    policy = RegoPolicy(converted)
    policy.validate()
    assert compiles == []
    creds = {'roles': ['member'], 'project_id': 'p1'}
    doc = policy.input_for('get_thing', creds, {'project_id': 'p1'})
    assert policy.evaluate('get_thing', doc) is True
    # Its fast bundle is the one the conversion compiled and saved.
    assert compiles == []
    # An input that leaves the fast path: the full rule, compiled now.
    odd = {**creds, 'project_id': {'id': 'p1'}}
    doc = policy.input_for('get_thing', odd, {'project_id': 'p1'})
    assert policy.evaluate('get_thing', doc) is False
    assert compiles == ["rule 'get_thing'"]


def test_an_edited_rule_is_compiled_at_load(converted, compiles):
    _edit(converted, 'p/admin.rego', 'default allow := false', 'x := 1')
    RegoPolicy(converted).validate()
    # admin's own bundle; its readers' are built as decisions need them.
    assert compiles == ["rule 'admin'"]


def test_a_broken_edit_is_refused_at_load_with_its_line(converted, caplog):
    path = _edit(
        converted,
        'p/delete_thing.rego',
        'default allow := false',
        'allow if {',
    )
    with caplog.at_level('ERROR', logger='oslo_opa'):
        d = decider.load(converted)
    # Nothing loaded: every decision denies, admin or not.
    assert d.decide('get_thing', {}, {'roles': ['admin']}) is False
    rel = os.path.relpath(path, converted)
    assert f'{rel}:' in caplog.text and 'does not compile' in caplog.text
    d.close()


def test_an_edited_library_file_is_compiled_at_load(converted, compiles):
    path = _edit(
        converted,
        'oslo_opa/lib.rego',
        'negate(state) :=',
        'negate(state) := {\n',
    )
    with pytest.raises(PolicyLoadError) as e:
        RegoPolicy(converted).validate()
    assert compiles == ['the policy']
    assert f'{os.path.relpath(path, converted)}:' in str(e.value)


def test_a_module_of_the_operators_is_compiled_at_load(converted, compiles):
    with open(os.path.join(converted, 'mine.rego'), 'w') as f:
        f.write('package mine\n\nx := \n')
    with pytest.raises(PolicyLoadError, match='mine.rego:'):
        RegoPolicy(converted).validate()
    assert compiles == ['the policy']


def test_a_manifest_without_library_digests_compiles_everything(
    converted, compiles
):
    import json

    path = os.path.join(converted, 'manifest.json')
    with open(path) as f:
        doc = json.load(f)
    del doc['library_sha256']
    with open(path, 'w') as f:
        json.dump(doc, f)
    RegoPolicy(converted).validate()
    assert compiles == ['the policy']


# --- fast bundles compiled at conversion -----------------------------------


def _saved(converted):
    import json

    with open(os.path.join(converted, 'manifest.json')) as f:
        doc = json.load(f)
    return doc, doc['prebuilt']['fast']


def _member_decides(policy):
    creds = {'roles': ['member'], 'project_id': 'p1'}
    doc = policy.input_for('get_thing', creds, {'project_id': 'p1'})
    return policy.evaluate('get_thing', doc)


def test_a_corrupt_saved_bundle_is_compiled_again(converted, compiles):
    _, saved = _saved(converted)
    for entry in saved.values():
        path = os.path.join(converted, entry['file'])
        with open(path, 'r+b') as f:
            data = bytearray(f.read())
            data[len(data) // 2] ^= 0xFF
            f.seek(0)
            f.write(data)
    policy = RegoPolicy(converted)
    assert _member_decides(policy) is True
    assert compiles == ["rule 'get_thing' (fast path)"]


def test_a_missing_saved_bundle_is_compiled_again(converted, compiles):
    _, saved = _saved(converted)
    for entry in saved.values():
        os.unlink(os.path.join(converted, entry['file']))
    assert _member_decides(RegoPolicy(converted)) is True
    assert compiles == ["rule 'get_thing' (fast path)"]


def test_bundles_saved_by_another_regopy_are_not_read(converted, compiles):
    import json

    doc, _ = _saved(converted)
    doc['prebuilt']['regopy'] = '0.0.1'
    with open(os.path.join(converted, 'manifest.json'), 'w') as f:
        json.dump(doc, f)
    assert _member_decides(RegoPolicy(converted)) is True
    assert compiles == ["rule 'get_thing' (fast path)"]


def test_without_strict_builtin_errors_bundles_are_compiled(
    converted, compiles
):
    policy = RegoPolicy(converted, strict_builtin_errors=False)
    assert _member_decides(policy) is True
    assert compiles == ["rule 'get_thing' (fast path)"]


@pytest.mark.parametrize('service', ['keystone', 'neutron'])
def test_saved_variants_decide_as_the_full_rule(tmp_path, service, compiles):
    """Each saved fast bundle variant, on the inputs it is used for,
    decides as the rule's full Rego (compiled here, from the modules)."""
    import collections

    from oslo_opa import bundler as bundler_mod
    from oslo_opa import input_profile
    from oslo_opa.convert import load_rule_table
    from tests import differential
    from tests.corpus import policy_file

    out = str(tmp_path / service)
    convert(out, policy_files=[policy_file(service)], tests=False)
    compiles.clear()  # what the conversion compiled and saved
    policy = RegoPolicy(out)
    table = load_rule_table(policy_files=[policy_file(service)])
    used: collections.Counter = collections.Counter()
    for rule in table.rules:
        path = policy.manifest.rules[rule].path
        for creds, target in differential.rule_inputs(table, rule, 12):
            doc = policy.input_for(rule, creds, target)
            profile = input_profile.fast_profile(doc)
            got = policy.evaluate(rule, doc)
            bundle = policy.bundle(rule)
            full = policy._answer(rule, *policy._query(bundle, path, doc))
            assert got == full, (rule, creds, target)
            if profile is not None:
                used[profile[0]] += 1
    assert all(used[v] > 0 for v in bundler_mod.VARIANTS), used
    # Every fast path decided came from a saved bundle.
    assert not [w for w in compiles if w.endswith('(fast path)')]
