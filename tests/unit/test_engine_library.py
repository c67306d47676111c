"""The embedded engine's fast bundles: what goes in them, and when.

A fast bundle holds only the library files its rule calls
(``fast_library.FAST_LIBRARY``).  regopy compiles a call to a function no
module defines without complaint (the call is simply undefined, so a
check would quietly fail), so the table is checked here against the
library itself.
"""

from __future__ import annotations

import os
import re
from importlib import resources

import pytest

from oslo_opa import engine, fast_library, input_profile, policy_files
from oslo_opa.convert import convert
from oslo_opa.errors import PolicyLoadError

REGO = resources.files('oslo_opa') / 'rego'
CORPUS = os.path.join(os.path.dirname(__file__), '..', 'fixtures', 'corpus')
_HEAD = re.compile(r'^(?:default )?([a-z_][a-z0-9_]*)\b', re.M)
_NAME = re.compile(r'\b([a-z_][a-z0-9_]*)\b')
_KEYWORDS = {'package', 'import', 'else', 'default'}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|`[^`]*`')


def _library() -> dict[str, str]:
    out = {}
    for pkg in REGO.iterdir():
        for f in pkg.iterdir() if pkg.is_dir() else ():
            if f.name.endswith('.rego') and not f.name.endswith('_test.rego'):
                out[f'{pkg.name}/{f.name}'] = f.read_text('utf-8')
    return out


def _converted(tmp_path, policy_yaml: str) -> engine.RegoPolicy:
    """The embedded engine's policy for policy_yaml, converted."""
    src = tmp_path / 'policy.yaml'
    src.write_text(policy_yaml, encoding='utf-8')
    out = str(tmp_path / 'out')
    convert(out, policy_files=[str(src)], package_prefix='p')
    return engine.RegoPolicy(out)


def _code(text: str) -> str:
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith('#')]
    return _STRING.sub('""', '\n'.join(lines))


def _defined(text: str) -> set[str]:
    return set(_HEAD.findall(_code(text))) - _KEYWORDS


def test_every_fast_helper_comes_with_what_it_calls():
    library = _library()
    defined_in = {
        name: path for path, text in library.items() for name in _defined(text)
    }
    for helper, files in fast_library.FAST_LIBRARY.items():
        assert defined_in[helper] in files, (helper, files)
        names = set()
        for path in files:
            names |= _defined(library[path])
        for path in files:
            called = set(_NAME.findall(_code(library[path])))
            missing = {n for n in called if n in defined_in and n not in names}
            assert not missing, f'{helper}: {path} calls {missing}'


def test_a_helper_missing_from_the_table_is_noticed():
    """The check above can fail: drop a dependency and it does."""
    library = _library()
    defined_in = {
        name: path for path, text in library.items() for name in _defined(text)
    }
    files = ('oslo_opa/subst.rego',)  # without pystr.rego
    names = set().union(*(_defined(library[p]) for p in files))
    called = set(_NAME.findall(_code(library[files[0]])))
    assert {n for n in called if n in defined_in and n not in names} == {
        'py_str'
    }


@pytest.mark.parametrize('service', ['keystone', 'neutron', 'nova'])
def test_corpus_rules_get_a_fast_bundle(tmp_path, service):
    out = str(tmp_path / service)
    convert(out, policy_files=[os.path.join(CORPUS, f'{service}.policy.yaml')])
    policy = engine.RegoPolicy(out)
    without = [r for r, lib in policy._b.fast_library.items() if lib is None]
    # Only rules in a reference cycle have none (none in these three).
    assert without == []
    # And a fast bundle compiles and decides.
    rule = next(iter(policy.manifest.rules))
    doc = {'credentials': {'roles': ['admin']}, 'target': {}, 'rule': rule}
    policy.evaluate(rule, doc)
    assert any(key[0] == 'fast' for key in policy._bundles), (
        policy._bundles.keys()
    )


def test_a_read_rule_keeps_its_strings_in_the_fast_bundle(tmp_path):
    """The fast bundle renames a read rule's _fast to allow, not a role
    that happens to be called _fast."""
    policy = _converted(
        tmp_path, 'a: "role:_fast or role:allow_x"\nb: "rule:a"\n'
    )
    assert policy._b.fast_library['b'] is not None

    def decide(roles):
        doc = {'credentials': {'roles': roles}, 'target': {}, 'rule': 'b'}
        return policy.evaluate('b', doc)

    assert decide(['_FAST']) is True
    assert decide(['allow']) is False
    assert decide(['allow_x']) is True
    assert any(key[0] == 'fast' for key in policy._bundles)


def test_a_rule_named_like_a_test_module_loads(tmp_path):
    """a:test's module is not <x>_test.rego, which tools skip as tests."""
    policy = _converted(tmp_path, '"a:test": "role:a"\n')
    doc = {'credentials': {'roles': ['A']}, 'target': {}, 'rule': 'a:test'}
    assert policy.evaluate('a:test', doc) is True


def test_converted_inputs_are_reused_only_for_equal_documents(tmp_path):
    """True and 1 are equal keys in Python but not equal in Rego."""
    policy = _converted(tmp_path, 'a: "is_admin:True"\nb: "is_admin:1"\n')
    keys = {
        input_profile.fast_profile(
            {'credentials': {'is_admin': v}, 'target': {}}
        )[1]
        for v in (True, 1, '1', 'True', None)
    }
    assert len(keys) == 5 and None not in keys
    # Whether the rule's dotted walks were checked (input.walked) is part
    # of the converted document, so of its key: rules differ in paths.
    doc = {'credentials': {'is_admin': True}, 'target': {}}
    walked = input_profile.fast_profile(doc, paths=(('token', 'id'),))
    assert walked[3] is True
    assert walked[1] != input_profile.fast_profile(doc)[1]

    def decide(rule, value):
        doc = {'credentials': {'is_admin': value}, 'target': {}, 'rule': rule}
        return policy.evaluate(rule, doc)

    # Alternately, on the same pooled interpreter and its kept inputs.
    for _ in range(3):
        assert [decide('a', v) for v in (True, 1, 'True')] == [
            True,
            False,
            True,
        ]
        assert [decide('b', v) for v in (True, 1, '1')] == [False, True, True]
    assert len(policy._pool) == 1
    assert len(policy._pool[0][1]) == 4  # True, 1, "True", "1"


def test_data_strings_reach_the_embedded_engine_as_written(tmp_path):
    """Non-ASCII data is sent as UTF-8; what regopy would read with its
    escapes still in is refused, naming the file and where."""
    src = tmp_path / 'policy.yaml'
    src.write_text('"owner": "rule:r"\n"r": "role:x"\n')
    out = str(tmp_path / 'out')
    convert(out, policy_files=[str(src)], package_prefix='p')
    # Hand-written: the caller is in the data's list of owners.
    module = tmp_path / 'out' / 'p' / 'owner.rego'
    module.write_text(
        'package p.owner\n\ndefault allow := false\n\n'
        'allow if input.credentials.user_id in data.owners\n'
    )
    good = tmp_path / 'good.json'
    good.write_text('{"owners": ["josé", "ann"]}', encoding='utf-8')
    policy = engine.RegoPolicy(
        out, data=policy_files.load_data([str(good)], embedded=True)
    )

    def decide(user):
        creds = {'user_id': user, 'roles': []}
        doc = {'credentials': creds, 'target': {}, 'rule': 'owner'}
        return policy.evaluate('owner', doc)

    assert [decide(u) for u in ('josé', 'ann', 'bob')] == [True, True, False]
    bad = tmp_path / 'bad.json'
    bad.write_text('{"owners": ["ann", "o\\"brien"]}')
    with pytest.raises(PolicyLoadError) as e:
        policy_files.load_data([str(bad)], embedded=True)
    assert str(bad) in str(e.value) and '.owners[1]' in str(e.value)
    # OPA reads it as written: bundles take it.
    assert policy_files.load_data([str(bad)])['owners'][1] == 'o"brien'


# (credentials, target): tidy or not, by lib.tidy.
_TIDY_CASES = [
    ({}, {}),
    ({'roles': []}, {}),
    ({'roles': ['reader', 'Admin', 'r\u00f4le']}, {'id': 'x'}),
    ({'roles': 'admin'}, {}),
    ({'roles': ['admin', 1]}, {}),
    ({'roles': ['admin', None]}, {}),
    ({'roles': {'admin': 1}}, {}),
    ({'roles': None}, {}),
    ({'user_id': 'u', 'is_admin': True, 'n': 3, 'd': None}, {}),
    ({'x': 1.5}, {}),
    ({'x': [1]}, {}),
    ({'x': []}, {}),
    ({'x': [], 'roles': []}, {'a': 'b'}),
    ({'x': ['']}, {}),
    ({'x': [[]]}, {}),
    ({'x': ['a', 1, None, True]}, {}),
    ({'x': ['a', {'b': 1}]}, {}),
    ({'roles': ''}, {}),
    ({'roles': {}}, {}),
    ({'x': {'a': 1}}, {}),
    ({}, {'a': None, 'b': True, 'c': 7, 'd': 'x'}),
    ({}, {'a': 1.5}),
    ({}, {'a': []}),
    ({}, {'a': {}}),
]


@pytest.mark.parametrize('creds,target', _TIDY_CASES)
def test_the_python_tidy_is_lib_tidy(creds, target):
    """The engine decides in Python whether the fast path may decide; it
    must agree with lib.tidy (the fast path assumes no check can raise),
    but for what the fast path handles beyond it: roles sent as the list
    a role check iterates, and credentials that are lists of scalars
    (the fast path's comparisons walk them, as oslo.policy does)."""
    import json

    import regopy

    it = regopy.Interpreter()
    for name, text in _library().items():
        it.add_module(name, text)

    def ask(doc, what='tidy'):
        it.set_input_term(json.dumps(doc))
        # A query whose expression is false is undefined: bind the value.
        out = str(it.query(f'x := data.oslo_opa.lib.{what}'))
        if what != 'tidy' and out == 'undefined':
            return False
        assert out.endswith(('"x":true}}', '"x":false}}')), out
        return out.endswith('true}}')

    doc = {'credentials': creds, 'target': target}
    profile = input_profile.fast_profile(doc)
    if profile is None:
        assert not ask(doc)
        return
    sent = dict(profile[2])
    if profile[0] == input_profile.RAISING:
        # Roles every role check raises on, as the library says; the
        # rest as below.
        assert ask(doc, '_roles_error')
        del sent['roles']
    if isinstance(creds.get('roles'), (str, dict)):
        assert sent['roles'] == list(creds['roles'])
    # Beyond lib.tidy only lists of scalars: one of their items is tidy.
    lists = {
        k: v[0]
        for k, v in sent.items()
        if k != 'roles' and isinstance(v, list) and v
    }
    assert all(not isinstance(v, (list, dict)) for v in lists.values())
    assert ask({**doc, 'credentials': {**sent, **lists}})


@pytest.mark.parametrize(
    'roles,variant',
    [
        (['reader', 'member'], input_profile.LOWER),
        ([], input_profile.LOWER),
        (['reader', 'Member'], input_profile.SIMPLE),
        (['r\u00f4le'], input_profile.FULL),
        # Roles are compared as strings: reading like another type's
        # str() does not matter (other values are sent as their str()).
        (['True'], input_profile.SIMPLE),
        (['42'], input_profile.LOWER),
    ],
)
def test_each_fast_variant_decides_as_the_full_policy(
    tmp_path, roles, variant
):
    """The input picks a fast variant; each is exact on its inputs."""
    policy = _converted(
        tmp_path,
        '"r": "role:member or role:r\u00d4le or role:42 or '
        '(role:true and project_id:%(p)s)"\n',
    )
    assert policy._b.fast_library['r'] is not None
    doc = {'credentials': {'roles': roles}, 'target': {}, 'rule': 'r'}
    assert input_profile.fast_profile(doc)[0] == variant
    for extra in ([], ['MEMBER'], ['member'], ['x']):
        doc = {
            'credentials': {'roles': roles + extra, 'project_id': 'p1'},
            'target': {'p': 'p1'},
            'rule': 'r',
        }
        expected = policy.state('r', doc) == 't'
        assert policy.evaluate('r', doc) is expected, (roles, extra)
    built = {key[2] for key in policy._bundles if key[0] == 'fast'}
    assert variant in built


def test_credential_lists_and_odd_roles_take_the_fast_path(tmp_path):
    """Credentials holding lists of scalars, and roles that are a string
    or a dict, are decided by the fast path, exactly: as the three-valued
    rule decides (the differential tests compare both with oslo.policy).
    ["s"] is sent as "s"; longer lists as they are, to the full variant,
    whose comparisons walk them."""
    policy = _converted(
        tmp_path,
        '"one": "service_roles:service and project_id:%(p)s"\n'
        '"both": "x:a and x:b"\n'
        '"subst": "x:%(p)s or x:pre-%(p)s"\n'
        '"typed": "x:True or x:1 or not x:None"\n'
        '"role": "role:admin or (role:b and not role:c)"\n',
    )
    doc = {'credentials': {'x': ['a'], 'roles': ['r']}, 'target': {}}
    assert input_profile.fast_profile(doc)[2] == {'x': 'a', 'roles': ['r']}
    assert doc['credentials']['x'] == ['a']  # the caller's is untouched
    two = {'credentials': {'x': ['a', 'b']}, 'target': {}}
    assert input_profile.fast_profile(two)[0] == input_profile.ASCII
    # Credentials are compared, never lower-cased: only roles and target
    # values (role:%(x)s) need to be ASCII for lower().
    wide = {'credentials': {'x': ['a', '\u00e9']}, 'target': {}}
    assert input_profile.fast_profile(wide)[0] == input_profile.ASCII
    wide = {'credentials': {'x': ['a', 'b']}, 'target': {'p': '\u00e9'}}
    assert input_profile.fast_profile(wide)[0] == input_profile.FULL
    nested = {'credentials': {'x': ['a', {'b': 1}]}, 'target': {}}
    assert input_profile.fast_profile(nested) is None
    odd = {'credentials': {'roles': 'Ab'}, 'target': {}}
    assert input_profile.fast_profile(odd)[2] == {'roles': ['A', 'b']}
    cases = [
        ('one', {'service_roles': ['service'], 'project_id': 'p1'}, True),
        ('one', {'service_roles': ['Service'], 'project_id': 'p1'}, False),
        ('one', {'service_roles': ['service', 'x'], 'project_id': 'p1'}, True),
        ('one', {'service_roles': ['x', 'service'], 'project_id': 'p1'}, True),
        ('one', {'service_roles': ['x', 'y'], 'project_id': 'p1'}, False),
        ('one', {'service_roles': [], 'project_id': 'p1'}, False),
        ('one', {'service_roles': ['service'], 'project_id': 'p2'}, False),
        (
            'one',
            {'service_roles': ['service'], 'project_id': 'p\u00e9'},
            False,
        ),
        ('both', {'x': ['\u00e9', 'b', 'a']}, True),
        ('subst', {'x': ['\u00e9', 'pre-p1']}, True),
        ('both', {'x': ['a']}, False),
        ('both', {'x': ['a', 'b']}, True),
        ('both', {'x': ['b', 1, 'a']}, True),
        ('subst', {'x': ['p1']}, True),
        ('subst', {'x': ['pre-p1']}, True),
        ('subst', {'x': ['True']}, False),
        ('subst', {'x': ['p2', 'pre-p1']}, True),
        ('subst', {'x': [None, 'p2']}, False),
        ('typed', {'x': [True, 'None']}, True),
        ('typed', {'x': ['true', 1]}, True),
        ('typed', {'x': ['true', None]}, False),
        ('typed', {'x': ['1.0', 'x']}, True),
        ('typed', {'x': [False, 0, 'none']}, True),
        ('role', {'roles': 'admin'}, False),
        ('role', {'roles': 'b'}, True),
        ('role', {'roles': 'bc'}, False),
        ('role', {'roles': {'ADMIN': 1}}, True),
        ('role', {'roles': {'B': None, 'x': 2}}, True),
        ('role', {'roles': {}}, False),
        ('role', {'roles': ''}, False),
    ]
    docs = [
        {'credentials': creds, 'target': {'p': 'p1'}, 'rule': rule}
        for rule, creds, _ in cases
    ]
    decided = [policy.evaluate(doc['rule'], doc) for doc in docs]
    # Every decision came from a fast bundle: no full one was built.
    assert not [key for key in policy._bundles if key[0] == 'full']
    for doc, (rule, creds, allowed), got in zip(
        docs, cases, decided, strict=True
    ):
        assert policy.state(rule, doc) == ('t' if allowed else 'f'), creds
        assert got is allowed, (rule, creds)


def test_lists_reach_the_fast_path_only_where_it_walks_them(tmp_path):
    """A conversion whose manifest does not say its fast paths walk lists
    (an older oslo.opa's), or whose library was edited, gets them decided
    by the three-valued rule: an older fast path compares a list whole."""
    import json

    _converted(tmp_path, '"r": "not x:a and project_id:%(p)s"\n')
    out = str(tmp_path / 'out')
    doc = {
        'credentials': {'x': ['b', 'a'], 'project_id': 'p1'},
        'target': {'p': 'p1'},
        'rule': 'r',
    }

    def decide(directory):
        policy = engine.RegoPolicy(directory)
        decided = policy.evaluate('r', doc)
        full = [key for key in policy._bundles if key[0] == 'full']
        return decided, bool(full)

    assert decide(out) == (False, False)
    manifest = os.path.join(out, 'manifest.json')
    with open(manifest) as f:
        written = json.load(f)
    older = dict(written)
    del older['fast_lists']
    with open(manifest, 'w') as f:
        json.dump(older, f)
    assert decide(out) == (False, True)
    with open(manifest, 'w') as f:
        json.dump(written, f)
    compare = os.path.join(out, 'oslo_opa', 'compare.rego')
    with open(compare, 'a') as f:
        f.write('\n# edited\n')
    assert decide(out) == (False, True)


def test_roles_that_raise_are_decided_by_the_fast_modules(tmp_path):
    """Roles oslo.policy cannot iterate or lower-case make every role
    check it reaches raise: the order of the checks then decides.  The
    fast modules' _rr_decision decides such inputs, exactly as the
    three-valued rule does, through rule references, not, and, or, and
    substitutions (a missing key makes a role check False, not raise)."""
    policy = _converted(
        tmp_path,
        '"admin": "role:admin"\n'
        '"first": "rule:admin or project_id:%(p)s"\n'
        '"last": "project_id:%(p)s or rule:admin"\n'
        '"negated": "not role:x and project_id:%(p)s"\n'
        '"keyed": "(project_id:%(p)s and role:%(r)s) or user_id:u1"\n'
        '"outer": "not (project_id:%(p)s and role:member)"\n'
        '"nested": "not (user_id:u1 or rule:admin) or rule:last"\n'
        '"none": "user_id:u1 and not user_id:u2"\n',
    )
    rules = ['first', 'last', 'negated', 'keyed', 'outer', 'nested', 'none']
    docs = []
    for roles in (None, 3, True, 1.5, ['admin', None], [['x']], [{}, 'a']):
        for creds in (
            {'project_id': 'p1', 'user_id': 'u1'},
            {'project_id': 'p2', 'user_id': 'u2'},
            {'project_id': 'p1'},
            {'user_id': ['u2', 'u1']},
        ):
            for target in ({'p': 'p1', 'r': 'x'}, {'p': 'p1'}, {}):
                for rule in rules:
                    docs.append(
                        {
                            'credentials': {**creds, 'roles': roles},
                            'target': target,
                            'rule': rule,
                        }
                    )
    for doc in docs:
        profile = input_profile.fast_profile(doc)
        assert profile[0] == input_profile.RAISING, doc
    decided = [policy.evaluate(doc['rule'], doc) for doc in docs]
    # No full bundle was built: the fast modules decided them all.
    assert not [key for key in policy._bundles if key[0] == 'full']
    assert any(decided) and not all(decided)
    for doc, got in zip(docs, decided, strict=True):
        state = policy.state(doc['rule'], doc)
        assert got is (state == 't'), (doc, state)
    # Roles only odd in shape are iterated, not raised on.
    odd = {'credentials': {'roles': {'admin': 1}}, 'target': {}}
    assert input_profile.fast_profile(odd)[0] != input_profile.RAISING


def test_dotted_credential_paths_walk_dicts_on_the_fast_path(tmp_path):
    """A credential read only through dotted paths (keystone's
    token.domain.id) may be a dict: the fast path walks it, lists of
    dicts on the way item by item, and sends the walks that meet
    anything else before their end (oslo.policy raises there) or end on
    a container to the three-valued rule."""
    policy = _converted(
        tmp_path,
        '"t": "token.domain.id:%(d)s or user_id:%(u)s"\n'
        '"s": "token.project.domain.id:default and not token.x:1"\n'
        '"flat": "token:%(d)s or rule:t"\n'
        '"n": "not token.domain.id:%(d)s"\n',
    )
    assert policy._b.dotted['t'] == {'token'}
    assert policy._b.dotted['flat'] == frozenset()  # read whole too
    plain = [
        {'domain': {'id': 'd1'}},
        {'domain': {'id': 'd2', 'name': 'x'}},
        {'domain': {}},
        {},
        {'domain': {'id': ['d2', 'd1']}},
        {'domain': {'id': 1}, 'x': 1},
        {'project': {'domain': {'id': 'default'}}},
        {'project': {'domain': {'id': 'default'}}, 'x': '1'},
        {'project': {'domain': {'id': 'default'}}, 'x': True},
        {'domain': [{'id': 'd1'}]},
        {'domain': [{'id': 'd2'}, {'n': 1}, {'id': ['d1']}]},
        [{'domain': {'id': 'd2'}}, {'domain': {'id': 'd1'}}],
        [{'x': 1}, {'project': [{'domain': {'id': 'default'}}]}],
    ]
    odd = [
        {'domain': 'd1'},
        {'domain': [{'id': 'd1'}, 'd1']},
        [{'domain': {'id': 'd1'}}, None],
        {'domain': [[{'id': 'd1'}]]},
        {'domain': {'id': {'a': 1}}},
        {'domain': {'id': ['d1', {}]}},
        {'project': None},
        'token',
        ['a'],
    ]
    target = {'d': 'd1', 'u': 'u9'}

    def docs(tokens, rules):
        return [
            {
                'credentials': {'token': token, 'user_id': 'u1'},
                'target': target,
                'rule': rule,
            }
            for token in tokens
            for rule in rules
        ]

    fast = docs(plain, ['t', 's', 'n'])
    decided = [policy.evaluate(d['rule'], d) for d in fast]
    assert not [key for key in policy._bundles if key[0] == 'full']
    assert any(decided) and not all(decided)
    rest = docs(odd, ['t', 's', 'n']) + docs(plain[:2], ['flat'])
    decided += [policy.evaluate(d['rule'], d) for d in rest]
    for doc, got in zip(fast + rest, decided, strict=True):
        assert got is (policy.state(doc['rule'], doc) == 't'), doc
    # Walks the engine checks in Python, and tells the fast path so.
    paths = policy._b.dotted_paths['n']
    walked = [
        input_profile.fast_profile(
            doc, dotted=frozenset({'token'}), paths=paths
        )
        for doc in docs(plain[:4] + odd[:3], ['n'])
    ]
    assert [w.walked for w in walked] == [True] * 4 + [False] * 3
    # Lists of dicts are walked too, whatever the order of their items.
    listed = [
        input_profile.fast_profile(
            doc, dotted=frozenset({'token'}), paths=paths
        ).walked
        for doc in docs(plain[9:], ['n'])
    ]
    assert listed == [True] * 4


def test_typed_values_are_sent_as_their_str(tmp_path):
    """oslo.policy compares a credential or a target value by its str()
    alone, so the engine sends ints, booleans and None as their str():
    an ASCII input then takes a simple variant (``==`` for ``str_eq``),
    whatever its strings read like ("True", "1"), and decides as the
    three-valued rule does."""
    from oslo_opa import notes

    policy = _converted(
        tmp_path,
        '"typed": "x:True or x:1 or not x:None"\n'
        '"eq": "project_id:%(p)s or user_id:pre-%(p)s"\n'
        '"lit": "True:%(p)s or \'1\':%(p)s"\n'
        '"dot": "token.domain.id:%(p)s or token.id:None"\n',
    )
    values = [True, False, None, 0, 1, -1, 'True', 'None', '1', '-1', 'x']
    values += ['pre-1', 'pre-True']
    checked = 0
    for x in values:
        for p in values:
            for rule, creds in (
                ('typed', {'x': x}),
                ('eq', {'project_id': x, 'user_id': x}),
                ('lit', {}),
                ('dot', {'token': {'domain': {'id': x}, 'id': x}}),
            ):
                doc = {
                    'credentials': {'roles': ['r'], **creds},
                    'target': {'p': p},
                    'rule': rule,
                }
                args = policy._b.profile_args[rule]
                profile = input_profile.fast_profile(doc, *args)
                assert profile.variant == input_profile.LOWER, doc
                got = policy.evaluate(rule, doc)
                assert notes.last.route == 'fast', doc
                assert got is (policy.state(rule, doc) == 't'), doc
                checked += got
    assert 0 < checked < len(values) ** 2 * 4
    # The caller's document is left as it was.
    assert doc['credentials']['token']['id'] == 'pre-True'
