"""decide_many's batch form against oslo.policy, on the real corpus.

For every rule of the largest services, callers drawn from the inputs the
differential tests generate are asked about every generated target in one
``evaluate_many`` (the embedded driver's ``decide_many``): each decision
must equal oslo.policy's, and the batch form (``<rule>.batch.rego``)
must have answered, or this tests the one-by-one path instead (keystone,
nova and neutron: about 4,000, 7,700 and 14,000 of 13,000, 13,700 and
23,800 decisions).
"""

from __future__ import annotations

import os

import pytest

from oslo_opa import inputs, probe
from oslo_opa.convert import compile_table, emit, load_rule_table
from oslo_opa.engine import RegoPolicy
from oslo_opa.input_profile import RAISING, fast_profile
from tests.differential import enforcer_for, oslo_decision

CORPUS = os.path.join(os.path.dirname(__file__), '..', 'fixtures', 'corpus')
TARGETS = 16
CALLERS = 3


def _converted(name: str, tmp_path) -> tuple:
    table = load_rule_table(
        policy_files=[os.path.join(CORPUS, f'{name}.policy.yaml')]
    )
    out = str(tmp_path / 'out')
    emit.write(compile_table(table, name), out, table.scope_types)
    return table, RegoPolicy(out), enforcer_for(table)


def _spy(policy: RegoPolicy) -> list[int]:
    """Counts the targets each batch query answered (it still runs)."""
    answered: list[int] = []
    real = policy._batch_query

    def counted(*args, **kwargs):
        answers = real(*args, **kwargs)
        if answers is not None:
            answered.append(len(answers))
        return answers

    policy._batch_query = counted
    return answered


def _callers(policy, rule, cases) -> list:
    """Up to CALLERS credentials the fast path takes, and one it may not."""
    args = policy._b.profile_args.get(rule)
    tidy = []
    for creds, _ in cases:
        doc = inputs.build_input(creds, {}, rule)
        profile = fast_profile(doc, *args) if args else None
        if profile is not None and profile.variant != RAISING:
            if creds not in tidy:
                tidy.append(creds)
    return tidy[:CALLERS] + [cases[0][0]]


@pytest.mark.parametrize('name', ['keystone', 'nova', 'neutron'])
def test_batches_agree_with_oslo_policy(name, tmp_path):
    table, policy, enforcer = _converted(name, tmp_path)
    answered = _spy(policy)
    mismatches = []
    decisions = 0
    for rule in table.rules:
        leaves = probe.collect(table.rules, rule, table.default_rule)
        cases = probe.InputGenerator(leaves, seed=f'{name}:{rule}').inputs(
            TARGETS
        )
        targets = [t for _, t in cases]
        for creds in _callers(policy, rule, cases):
            docs = [
                policy.input_for(rule, inputs.credentials_dict(creds), t)
                for t in targets
            ]
            got = policy.evaluate_many(rule, docs)
            for target, answer in zip(targets, got, strict=True):
                expected = oslo_decision(enforcer, rule, creds, target)
                decisions += 1
                if answer is not expected:
                    mismatches.append((rule, creds, target, expected, answer))
    assert not mismatches, '\n'.join(
        f'{name} {rule!r}: creds={c!r} target={t!r} oslo.policy={e} '
        f'batch={g!r}'
        for rule, c, t, e, g in mismatches[:20]
    )
    # The batch form answered, on average, once per rule at least (each
    # rule is asked by up to three callers the fast path takes; generated
    # targets that are lists, dicts or floats are decided one by one).
    assert len(answered) >= len(table.rules), (len(answered), decisions)


def test_an_edited_batch_module_is_not_used(tmp_path):
    """A batch module that is not what the converter wrote decides
    nothing: each target is decided on its own."""
    src = tmp_path / 'policy.yaml'
    src.write_text('"r": "project_id:%(p)s or role:admin"\n')
    out = tmp_path / 'out'
    table = load_rule_table(policy_files=[str(src)])
    conv = compile_table(table, 'p')
    emit.write(conv, str(out), table.scope_types)
    batch = out / (conv.rules['r'].package.replace('.', '/') + '.batch.rego')
    text = batch.read_text()
    batch.write_text(
        text.replace('default _fast_t(_) := false', '')
        + ('\n_fast_t(_) := true\n')
    )
    creds = {'roles': ['reader'], 'project_id': 'p1'}
    docs = [inputs.build_input(creds, {'p': f'p{i}'}, 'r') for i in range(10)]
    for directory, batched in ((str(out), False),):
        policy = RegoPolicy(directory)
        answered = _spy(policy)
        got = policy.evaluate_many('r', docs)
        assert got == [i == 1 for i in range(10)]
        assert bool(answered) is batched
    # As written, the same directory's batch form decides them.
    batch.write_text(text)
    policy = RegoPolicy(str(out))
    answered = _spy(policy)
    assert policy.evaluate_many('r', docs) == [i == 1 for i in range(10)]
    assert answered == [10]


_SYNTHETIC = """
"owner": "project_id:%(project_id)s"
"admin": "role:admin"
"sub": "user_id:pre-%(p)s or role:%(r)s or role:x-%(r)s"
"lit": "'1':%(p)s or True:%(q)s or 'pre-1':pre-%(p)s"
"dot": "token.project.id:%(project_id)s or token.id:%(p)s-%(q)s"
"mix": "(rule:admin or rule:owner) and not rule:sub"
"neg": "not (rule:lit or project_id:%(q)s) or @"
"two": "%(p)s:%(q)s or rule:dot and rule:mix"
"""


def test_batch_forms_of_every_check_kind_agree_with_oslo_policy(tmp_path):
    """Substitutions (whole, partial, into roles and literals), dotted
    credentials, negation and references both to target rules and to
    credential-only ones, each in its batch form, against oslo.policy."""
    src = tmp_path / 'policy.yaml'
    src.write_text(_SYNTHETIC)
    table = load_rule_table(policy_files=[str(src)])
    out = str(tmp_path / 'out')
    emit.write(compile_table(table, 'syn'), out, table.scope_types)
    policy = RegoPolicy(out)
    enforcer = enforcer_for(table)
    answered = _spy(policy)
    values = ['1', 'p1', 'pre-1', 'Admin', 'x-admin', 'True', 1, True, None]
    targets = [
        {'project_id': a, 'p': b, 'q': c, 'r': d}
        for a in ('p1', 'p2')
        for b in values
        for c in values[::2]
        for d in ('admin', 'ADMIN', 'x')
    ]
    callers = [
        {'roles': ['admin'], 'project_id': 'p1', 'user_id': 'pre-1'},
        {'roles': ['reader', 'x-admin'], 'project_id': 'p2', 'user_id': 'u'},
        {
            'roles': ['Member'],
            'project_id': 'p1',
            'user_id': 'pre-p1',
            'token': {'project': {'id': 'p2'}, 'id': 'p1-True'},
        },
    ]
    checked = mismatches = 0
    for rule in table.rules:
        for creds in callers:
            docs = [policy.input_for(rule, creds, t) for t in targets]
            for target, answer in zip(
                targets, policy.evaluate_many(rule, docs), strict=True
            ):
                expected = oslo_decision(enforcer, rule, creds, target)
                checked += answer
                mismatches += answer is not expected
    assert mismatches == 0
    assert 0 < checked < len(table.rules) * len(callers) * len(targets)
    # Every target rule, for every caller, was decided by its batch form;
    # but "two", whose %(p)s:... raises in oslo.policy (_special: every
    # target "maybe"), and "admin", which reads no target.
    readers = [r for r in table.rules if r not in ('admin', 'two')]
    assert len(answered) == len(readers) * len(callers), answered
