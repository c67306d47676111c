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

POLICY = """
admin: role:admin
get_thing: rule:admin or project_id:%(project_id)s
delete_thing: rule:admin
"""


@pytest.fixture
def converted(tmp_path):
    (tmp_path / 'p.yaml').write_text(POLICY)
    out = str(tmp_path / 'opa')
    convert(out, policy_files=[str(tmp_path / 'p.yaml')], tests=False)
    return out


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
    assert compiles == ["rule 'get_thing' (fast path)"]


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
