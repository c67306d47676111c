"""The runtime: the ``opa`` rule check, the Decider and the embedded driver.

What a service sees once ``[oslo_policy] policy_file`` names the
delegation file written by ``oslo-opa convert`` and ``[oslo_opa]`` is
configured: decisions from many threads at once, policy and data reloads
while deciding, bad configuration, the failure modes, the input document
built from awkward Python values, secrets kept out of the logs, the
options as oslo-config-generator prints them, and ``decide_many``.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import random
import subprocess
import sys
import threading
import time
import uuid

import pytest
import yaml
from oslo_config import cfg
from oslo_context import context as oslo_context
from oslo_policy import policy as oslo_policy

from oslo_opa import check, decider, inputs, opts, probe
from oslo_opa.convert import convert, load_rule_table
from tests import corpus
from tests.differential import enforcer_for, oslo_decision

PREFIX = 'svc'

# A small policy: 'other' reads 'r', 'solo' is read by nothing.
SMALL = {
    'r': 'role:a',
    'other': 'role:c or rule:r',
    'solo': 'role:s',
}


@pytest.fixture(autouse=True)
def _fresh_deciders():
    """Each configuration object gets its own Decider, closed after."""
    check.reset()
    yield
    check.reset()


# --- helpers ---------------------------------------------------------------


def write_yaml(path, doc) -> str:
    with open(path, 'w', encoding='utf-8') as f:
        yaml.safe_dump(doc, f, default_flow_style=False)
    return str(path)


def convert_rules(tmp_path, rules, name='svc-src.yaml', out=None):
    """Convert rules (a dict) into tmp_path/svc; returns (out, source)."""
    src = write_yaml(tmp_path / name, rules)
    out = out or str(tmp_path / PREFIX)
    convert(out, policy_files=[src], package_prefix=PREFIX)
    return out, src


def service(rego_path, delegation=None, **options):
    """An Enforcer set up as a service would: delegation file, [oslo_opa].

    rego_path None leaves ``[oslo_opa] rego_path`` unset.
    """
    conf = cfg.ConfigOpts()
    conf(args=[], default_config_files=[])
    enforcer = oslo_policy.Enforcer(
        conf,
        policy_file=delegation or os.path.join(rego_path, 'policy.yaml'),
    )
    conf.set_override('policy_dirs', [], 'oslo_policy')
    opts.register_opts(conf)
    if rego_path is not None:
        conf.set_override('rego_path', rego_path, 'oslo_opa')
    for key, value in options.items():
        conf.set_override(key, value, 'oslo_opa')
    return enforcer


def reference(policy_file):
    """oslo.policy itself, deciding the unconverted rules."""
    conf = cfg.ConfigOpts()
    conf(args=[], default_config_files=[])
    enforcer = oslo_policy.Enforcer(conf, policy_file=policy_file)
    conf.set_override('policy_dirs', [], 'oslo_policy')
    return enforcer


def opa_records(caplog, level=logging.DEBUG):
    return [
        r
        for r in caplog.records
        if r.name.startswith('oslo_opa') and r.levelno >= level
    ]


def module_file(out, rule):
    with open(os.path.join(out, 'manifest.json'), encoding='utf-8') as f:
        return os.path.join(out, json.load(f)['rules'][rule]['module'])


def replace_file(path, text, scratch):
    """Write path in one step (a reader never sees it half-written)."""
    tmp = os.path.join(str(scratch), '.tmp-' + os.path.basename(path))
    with open(tmp, 'w', encoding='utf-8') as f:
        f.write(text)
    os.replace(tmp, path)


def wait_for(predicate, timeout=10.0, interval=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


# A rule whose Rego compiles but fails to evaluate: two complete
# definitions of allow with different values (a conflict error).
EVAL_ERROR_MODULE = """package svc.r

allow := true if input.rule
allow := false if input.rule

state := "t" if input.rule
"""


# --- 1. concurrency --------------------------------------------------------

# keystone rules whose decision costs about 50 to 150 us of CPU in
# regopy, so that 8 x 5,000 decisions fit the time budget (the
# heaviest, identity:get_project, costs about 600 us on its own).
KEYSTONE_RULES = (
    'admin_required',
    'service_role',
    'service_or_admin',
    'owner',
    'admin_or_owner',
    'token_subject',
    'domain_managed_target_role',
    'identity:get_auth_catalog',
    'identity:create_application_credential',
)
THREADS = 8
PER_THREAD = 5000
INPUTS_PER_RULE = 25


@pytest.fixture(scope='module')
def keystone(tmp_path_factory):
    """keystone converted once, and a workload of (rule, creds, target)."""
    out = str(tmp_path_factory.mktemp('keystone') / 'opa')
    convert(
        out,
        policy_files=[corpus.policy_file('keystone')],
        package_prefix='keystone',
    )
    table = load_rule_table(policy_files=[corpus.policy_file('keystone')])
    workload = []
    for rule in KEYSTONE_RULES:
        leaves = probe.collect(table.rules, rule, table.default_rule)
        gen = probe.InputGenerator(leaves, seed=f'runtime:{rule}')
        workload += [(rule, c, t) for c, t in gen.inputs(INPUTS_PER_RULE)]
        workload.append(
            (rule, {'roles': ['admin'], 'user_id': 'u1'}, {'user_id': 'u1'})
        )
    return out, table, workload


def test_workload_decisions_are_oslo_policys(keystone):
    """The single-threaded answers the concurrency test compares with
    are oslo.policy's own."""
    out, table, workload = keystone
    single = decider.load(out, cache_size=0)
    ref = enforcer_for(table)
    wrong = [
        (rule, creds, target)
        for rule, creds, target in workload
        if single.decide(rule, target, creds)
        is not oslo_decision(ref, rule, creds, target)
    ]
    assert wrong == []


@pytest.mark.parametrize('cache_size', [0, 256])
def test_concurrent_decisions_equal_single_threaded(
    keystone, caplog, cache_size
):
    out, table, workload = keystone
    caplog.set_level(logging.WARNING, logger='oslo_opa')

    # The single-threaded answers, through each path: the Enforcer
    # also checks the registered defaults' scope_types before it asks
    # the opa check, so its answers may be stricter.
    single = decider.load(out, cache_size=0)
    expected_decide = [single.decide(r, t, c) for r, c, t in workload]
    single.close()
    single = service(out, cache_size=0)
    single.register_defaults(corpus.defaults('keystone'))
    expected_enforce = [
        single.enforce(r, dict(t), dict(c)) for r, c, t in workload
    ]
    for expected in (expected_decide, expected_enforce):
        assert 0.2 < sum(expected) / len(expected) < 0.8, 'a dull workload'

    enforcer = service(out, cache_size=cache_size)
    enforcer.register_defaults(corpus.defaults('keystone'))
    direct = decider.load(out, cache_size=cache_size)
    barrier = threading.Barrier(THREADS)
    errors, wrong, done = [], [], [0] * THREADS

    def worker(n):
        rng = random.Random(n)
        barrier.wait()
        for i in range(PER_THREAD):
            k = rng.randrange(len(workload))
            rule, creds, target = workload[k]
            try:
                if i % 2:
                    got = enforcer.enforce(rule, dict(target), dict(creds))
                    expected = expected_enforce[k]
                else:
                    got = direct.decide(rule, target, creds)
                    expected = expected_decide[k]
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append((n, i, rule, repr(e)))
                continue
            if got is not expected:
                wrong.append((n, i, 'enforce' if i % 2 else 'decide', k))
            done[n] += 1

    threads = [
        threading.Thread(target=worker, args=(n,)) for n in range(THREADS)
    ]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    elapsed = time.perf_counter() - start
    print(
        f'cache_size={cache_size}: {THREADS * PER_THREAD} decisions in '
        f'{elapsed:.2f}s, {elapsed / (THREADS * PER_THREAD) * 1e6:.0f} us '
        f'each (wall, {THREADS} threads)'
    )
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert wrong == []
    assert done == [PER_THREAD] * THREADS
    # Every decision was a real one: nothing failed and was denied.
    assert [r.getMessage() for r in opa_records(caplog)] == []
    if cache_size:
        for d in (direct, check.decider_for(enforcer.conf)):
            assert d.cache is not None
            assert 0 < len(d.cache._data) <= cache_size
    else:
        assert direct.cache is None
        assert check.decider_for(enforcer.conf).cache is None
    direct.close()


# --- 2. reload under load --------------------------------------------------

OLD = {'a': True, 'b': False, 'other': True}
NEW = {'a': False, 'b': True, 'other': False}


@pytest.mark.parametrize('cache_size', [0, 1024])
def test_reload_under_load(tmp_path, caplog, cache_size):
    caplog.set_level(logging.INFO, logger='oslo_opa')
    out, src = convert_rules(tmp_path, SMALL)
    enforcer = service(out, reload_interval=0, cache_size=cache_size)
    as_a = {'roles': ['a'], 'user_id': 'u'}
    as_b = {'roles': ['b'], 'user_id': 'u'}

    def decide_all():
        return {
            'a': enforcer.enforce('r', {}, dict(as_a)),
            'b': enforcer.enforce('r', {}, dict(as_b)),
            'other': enforcer.enforce('other', {}, dict(as_a)),
        }

    assert decide_all() == OLD
    stop = threading.Event()
    phase = ['old']  # 'new' once the main thread has seen the new rule
    errors = []
    logs = [[] for _ in range(4)]

    def worker(n):
        while not stop.is_set():
            started = phase[0]
            try:
                logs[n].append((started, decide_all()))
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.2)
        # The operator changes role:a to role:b and converts again.
        write_yaml(src, dict(SMALL, r='role:b'))
        convert(out, policy_files=[src], package_prefix=PREFIX)
        assert wait_for(lambda: decide_all() == NEW), (
            'the new rule never took effect'
        )
        phase[0] = 'new'
        time.sleep(0.3)
        swap_errors = [
            r.getMessage() for r in opa_records(caplog, logging.WARNING)
        ]

        # A broken module: the last good policy stays, one error line.
        caplog.clear()
        phase[0] = 'broken'
        broken = os.path.join(out, PREFIX, 'broken.rego')
        replace_file(broken, 'package svc.broken\n\nallow if {{{\n', tmp_path)
        assert wait_for(
            lambda: opa_records(caplog, logging.ERROR), timeout=10
        ), 'the broken module was never noticed'
        time.sleep(0.3)
        assert decide_all() == NEW
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)

    assert errors == []
    assert swap_errors == []
    for log in logs:
        answers = [a for _, a in log]
        assert all(a in (OLD, NEW) or _mixed(a) for a in answers)
        # Old, then new, never back: per input, the answers switch once.
        for key in OLD:
            seq = [a[key] for a in answers]
            first_new = seq.index(NEW[key]) if NEW[key] in seq else len(seq)
            assert OLD[key] not in seq[first_new:], (key, 'went back')
        # Calls begun after the new rule was seen decide by it.
        after = [a for started, a in log if started != 'old']
        assert after, 'a thread made no decision after the swap'
        assert all(a == NEW for a in after)
    errors_logged = opa_records(caplog, logging.ERROR)
    assert len(errors_logged) == 1, [r.getMessage() for r in errors_logged]
    message = errors_logged[0].getMessage()
    assert out in message
    assert 'broken.rego' in message


def _mixed(answers):
    """A decide_all() straddling the swap: each answer old or new."""
    return all(answers[k] in (OLD[k], NEW[k]) for k in OLD)


def test_reconverting_in_place_never_interrupts_decisions(tmp_path, caplog):
    """convert() into the live rego_path, the same policy each time.

    The answers must not change, and nothing may log an error: neither
    oslo.policy reading the delegation file nor the driver reloading.
    """
    caplog.set_level(logging.INFO)
    out, src = convert_rules(tmp_path, SMALL)
    enforcer = service(out, reload_interval=0, cache_size=0)
    direct = decider.load(out, reload_interval=0, cache_size=0)
    as_a = {'roles': ['a']}
    stop = threading.Event()
    wrong = {'enforce': 0, 'decide': 0}
    total = [0]
    errors = []

    def worker():
        while not stop.is_set():
            try:
                if enforcer.enforce('r', {}, dict(as_a)) is not True:
                    wrong['enforce'] += 1
                if direct.decide('r', {}, as_a) is not True:
                    wrong['decide'] += 1
                total[0] += 1
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for _ in range(60):
            convert(out, policy_files=[src], package_prefix=PREFIX)
            time.sleep(0.01)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert errors == []
    assert total[0] > 100
    assert wrong == {'enforce': 0, 'decide': 0}, f'of {total[0]} each'
    logged = [
        f'{r.name}: {r.getMessage()}'
        for r in caplog.records
        if r.levelno >= logging.ERROR
    ]
    assert logged == []
    direct.close()


def test_reconverting_in_place_leaves_no_gap(tmp_path, caplog, monkeypatch):
    """Decide between every rename convert() does on the live directory.

    Deterministic version of the test above: whatever the steps of
    the swap, a decision made between two of them is still correct and
    the directory (manifest, delegation file) is always there.
    """
    caplog.set_level(logging.INFO)
    out, src = convert_rules(tmp_path, SMALL)
    enforcer = service(out, reload_interval=0, cache_size=0)
    direct = decider.load(out, reload_interval=0, cache_size=0)
    as_a = {'roles': ['a']}
    seen = []

    def hook(name, real):
        def renamed(source, dest, *args, **kwargs):
            result = real(source, dest, *args, **kwargs)
            paths = {os.path.abspath(os.fspath(p)) for p in (source, dest)}
            if out in paths:
                seen.append(
                    (
                        f'after {name}({source}, {dest})',
                        os.path.isfile(os.path.join(out, 'manifest.json')),
                        os.path.isfile(os.path.join(out, 'policy.yaml')),
                        enforcer.enforce('r', {}, dict(as_a)),
                        direct.decide('r', {}, as_a),
                    )
                )
            return result

        return renamed

    for name in ('rename', 'replace'):
        monkeypatch.setattr(os, name, hook(name, getattr(os, name)))
    convert(out, policy_files=[src], package_prefix=PREFIX)
    monkeypatch.undo()
    assert [s for s in seen if s[1:] != (True, True, True, True)] == []
    logged = [
        f'{r.name}: {r.getMessage()}'
        for r in caplog.records
        if r.levelno >= logging.ERROR
    ]
    assert logged == []
    direct.close()


def test_reload_drops_cached_decisions(tmp_path):
    """The decision that notices the change is already the new policy's."""
    out, src = convert_rules(tmp_path, SMALL)
    d = decider.load(out, reload_interval=0, cache_size=1024, cache_ttl=3600)
    as_a = {'roles': ['a']}
    assert d.decide('r', {}, as_a) is True  # cached
    write_yaml(src, dict(SMALL, r='role:b'))
    convert(out, policy_files=[src], package_prefix=PREFIX)
    assert d.decide('r', {}, as_a) is False
    assert d.driver.generation == 2
    assert d.decide('r', {}, as_a) is False
    d.close()


def test_reload_race_cannot_cache_an_old_decision(tmp_path):
    """A decision made with the old policy, stored after the reload.

    Thread Y evaluates with the old policy and is paused (as the
    scheduler may) before its result reaches the cache; meanwhile the
    policy changes and another decision clears the cache.  Y's old
    answer must not be served under the new policy.
    """
    out, src = convert_rules(tmp_path, SMALL)
    d = decider.load(out, reload_interval=0, cache_size=1024, cache_ttl=3600)
    evaluate = d.driver.decide
    evaluated, resume = threading.Event(), threading.Event()

    def paused_decide(rule, doc):
        result = evaluate(rule, doc)
        if threading.current_thread().name == 'Y':
            evaluated.set()
            resume.wait(10)
        return result

    d.driver.decide = paused_decide
    as_ax = {'roles': ['a', 'x']}
    seen = []
    y = threading.Thread(
        target=lambda: seen.append(d.decide('r', {}, as_ax)), name='Y'
    )
    y.start()
    assert evaluated.wait(10)
    write_yaml(src, dict(SMALL, r='role:b'))
    convert(out, policy_files=[src], package_prefix=PREFIX)
    assert d.decide('r', {}, {'roles': ['b']}) is True  # reloads
    assert d.decide('r', {}, {'roles': ['b', 'y']}) is True
    resume.set()
    y.join(10)
    assert seen == [True]  # decided before the change: fine
    assert d.decide('r', {}, as_ax) is False
    d.close()


# --- 3. bad configuration --------------------------------------------------

BAD_CONFIGS = (
    'unknown_driver',
    'rego_path_unset',
    'rego_path_missing',
    'rego_path_empty',
    'data_path_malformed',
    'data_path_missing',
    'data_path_undecodable',
)


def _bad_config(tmp_path, case):
    """(rego_path, options, clue the error must name, manifest there?)"""
    out, _ = convert_rules(tmp_path, SMALL)
    data = str(tmp_path / 'data.json')
    if case == 'unknown_driver':
        return out, {'driver': 'no_such_driver'}, 'no_such_driver', True
    if case == 'rego_path_unset':
        return None, {}, 'rego_path', False
    if case == 'rego_path_missing':
        missing = str(tmp_path / 'nowhere')
        return missing, {}, missing, False
    if case == 'rego_path_empty':
        empty = tmp_path / 'empty'
        empty.mkdir()
        return str(empty), {}, str(empty), False
    if case == 'data_path_malformed':
        with open(data, 'w', encoding='utf-8') as f:
            f.write('{"projects": {"p1": [1, 2\n')
    elif case == 'data_path_undecodable':
        with open(data, 'wb') as f:
            f.write(b'{"projects": "\xff\xfe"}\n')
    return out, {'data_path': [data]}, data, True


@pytest.mark.parametrize('failure_mode', ['deny', 'fallback'])
@pytest.mark.parametrize('case', BAD_CONFIGS)
def test_bad_config_logs_once_and_denies(tmp_path, caplog, case, failure_mode):
    caplog.set_level(logging.DEBUG, logger='oslo_opa')
    rego_path, options, clue, has_manifest = _bad_config(tmp_path, case)
    # The delegation file of a good conversion names the rules.
    delegation = os.path.join(str(tmp_path / PREFIX), 'policy.yaml')
    enforcer = service(
        rego_path, delegation, failure_mode=failure_mode, **options
    )
    as_a = [enforcer.enforce('r', {}, {'roles': ['a']}) for _ in range(3)]
    as_z = [enforcer.enforce('r', {}, {'roles': ['z']}) for _ in range(3)]
    other = enforcer.enforce('other', {}, {'roles': ['a']})

    errors = [r.getMessage() for r in opa_records(caplog, logging.ERROR)]
    assert len(errors) == 1, errors
    assert clue in errors[0]
    assert as_z == [False] * 3
    if failure_mode == 'fallback' and has_manifest:
        # The manifest's check strings: r is role:a, other reads r.
        assert as_a == [True] * 3
        assert other is True
    else:
        assert as_a == [False] * 3
        assert other is False
    # Each failed decision says which rule it was about.
    warnings = [r.getMessage() for r in opa_records(caplog, logging.WARNING)]
    assert sum("'r'" in w for w in warnings) == 6
    assert sum("'other'" in w for w in warnings) == 1


# --- 4. failure_mode ---------------------------------------------------------


@pytest.mark.parametrize('failure_mode', ['deny', 'fallback'])
def test_evaluation_error_follows_failure_mode(tmp_path, caplog, failure_mode):
    caplog.set_level(logging.DEBUG, logger='oslo_opa')
    out, _ = convert_rules(tmp_path, SMALL)
    with open(module_file(out, 'r'), 'w', encoding='utf-8') as f:
        f.write(EVAL_ERROR_MODULE)
    enforcer = service(out, failure_mode=failure_mode, cache_size=0)
    fallback = failure_mode == 'fallback'

    assert enforcer.enforce('r', {}, {'roles': ['a']}) is fallback
    assert enforcer.enforce('r', {}, {'roles': ['z']}) is False
    # 'other' reads r, so it fails too: (role:c or rule:r) decides.
    assert enforcer.enforce('other', {}, {'roles': ['a']}) is fallback
    # A rule that does not read r is untouched.
    assert enforcer.enforce('solo', {}, {'roles': ['s']}) is True

    warnings = [r.getMessage() for r in opa_records(caplog, logging.WARNING)]
    assert sum("rule 'r'" in w for w in warnings) == 2, warnings
    assert sum("rule 'other'" in w for w in warnings) == 1, warnings
    assert not any("'solo'" in w for w in warnings)


@pytest.mark.parametrize('failure_mode', ['deny', 'fallback'])
def test_rule_missing_from_manifest_denies(tmp_path, caplog, failure_mode):
    """The delegation file names a rule the manifest no longer has.

    The manifest holds no check string for it, so there is nothing to
    fall back to: both modes deny, naming the rule.
    """
    caplog.set_level(logging.DEBUG, logger='oslo_opa')
    out, _ = convert_rules(tmp_path, SMALL)
    path = os.path.join(out, 'manifest.json')
    with open(path, encoding='utf-8') as f:
        doc = json.load(f)
    del doc['rules']['solo']
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(doc, f)
    enforcer = service(out, failure_mode=failure_mode)

    assert enforcer.enforce('solo', {}, {'roles': ['s']}) is False
    assert enforcer.enforce('r', {}, {'roles': ['a']}) is True
    warnings = [r.getMessage() for r in opa_records(caplog, logging.WARNING)]
    assert len(warnings) == 1, warnings
    assert "'solo'" in warnings[0]
    assert 'manifest.json' in warnings[0]


def test_fallback_follows_manifest_check_string_not_rego(tmp_path):
    """The fallback decides the manifest's check string, nothing else."""
    out, _ = convert_rules(tmp_path, SMALL)
    with open(module_file(out, 'r'), 'w', encoding='utf-8') as f:
        f.write(EVAL_ERROR_MODULE)
    path = os.path.join(out, 'manifest.json')
    with open(path, encoding='utf-8') as f:
        doc = json.load(f)
    doc['rules']['r']['check_str'] = 'role:fb or user_id:%(owner)s'
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(doc, f)
    d = decider.load(out, failure_mode='fallback', cache_size=0)
    assert d.decide('r', {}, {'roles': ['fb']}) is True
    assert d.decide('r', {}, {'roles': ['a']}) is False
    assert d.decide('r', {'owner': 'u1'}, {'roles': [], 'user_id': 'u1'})
    assert not d.decide('r', {'owner': 'u2'}, {'roles': [], 'user_id': 'u1'})


# --- 5. data_path and hand-edited modules ----------------------------------

REBAC_LIB = """package rebac

frozen(project) if data.projects[project].frozen == true
"""

REBAC_RULE = """package svc.r

default allow := false

allow if {
    input.credentials.user_id in data.projects[input.target.project_id].members
    not data.rebac.frozen(input.target.project_id)
}

state := "t" if allow

else := "f"
"""

DEPT_RULE = """package svc.solo

default allow := false

allow if input.credentials.department == "eng"

state := "t" if allow

else := "f"
"""


def test_data_path_and_hand_edited_modules(tmp_path):
    out, _ = convert_rules(tmp_path, SMALL)
    with open(os.path.join(out, 'rebac.rego'), 'w', encoding='utf-8') as f:
        f.write(REBAC_LIB)
    with open(module_file(out, 'r'), 'w', encoding='utf-8') as f:
        f.write(REBAC_RULE)
    with open(module_file(out, 'solo'), 'w', encoding='utf-8') as f:
        f.write(DEPT_RULE)
    data = tmp_path / 'data' / 'projects.json'
    data.parent.mkdir()
    data.write_text(
        json.dumps(
            {
                'projects': {
                    'p1': {'members': ['u1']},
                    'p2': {'members': ['u1', 'u2'], 'frozen': True},
                }
            }
        )
    )
    enforcer = service(out, data_path=[str(data)], reload_interval=0)

    def allowed(user, project):
        creds = {'user_id': user, 'roles': []}
        return enforcer.enforce('r', {'project_id': project}, creds)

    assert allowed('u1', 'p1') is True
    assert allowed('u2', 'p1') is False
    assert allowed('u1', 'p2') is False  # frozen, by the extra module
    assert allowed('u1', 'p3') is False  # no such project
    # 'other' (role:c or rule:r) reads the edited rule.
    assert enforcer.enforce(
        'other', {'project_id': 'p1'}, {'user_id': 'u1', 'roles': []}
    )

    # The data changes: picked up on the next decision.
    data.write_text(
        json.dumps({'projects': {'p1': {'members': ['u2', 'u3']}}})
    )
    assert wait_for(lambda: allowed('u2', 'p1'), timeout=5)
    assert allowed('u1', 'p1') is False
    assert allowed('u3', 'p1') is True

    # A hand-edited module reads what the manifest does not list.
    assert enforcer.enforce('solo', {}, {'department': 'eng'}) is True
    assert enforcer.enforce('solo', {}, {'department': 'ops'}) is False
    assert enforcer.enforce('solo', {}, {'roles': ['s']}) is False

    # Edited rules (and those reading them) get the full input;
    # unedited ones only what their checks read.
    driver = check.decider_for(enforcer.conf).driver
    creds = {'roles': ['a'], 'department': 'eng', 'user_id': 'u1'}
    target = {'project_id': 'p1', 'extra': 1}
    full = {'credentials': creds, 'target': target}
    for rule in ('r', 'solo', 'other'):
        doc = driver.input_for(rule, creds, target)
        assert doc == dict(full, rule=rule)
    convert_rules(
        tmp_path,
        {'plain': 'role:c', 'own': 'user_id:%(owner)s'},
        name='plain.yaml',
        out=str(tmp_path / 'plain'),
    )
    plain = decider.load(str(tmp_path / 'plain')).driver
    assert plain.input_for('plain', creds, target) == {
        'credentials': {'roles': ['a']},
        'target': {},
        'rule': 'plain',
    }
    assert plain.input_for('own', creds, dict(target, owner='u1')) == {
        'credentials': {'user_id': 'u1'},
        'target': {'owner': 'u1'},
        'rule': 'own',
    }


# --- 6. input building -----------------------------------------------------


class Named:
    def __str__(self):
        return 'named-object'


class Unprintable:
    def __str__(self):
        raise RuntimeError('no')


ODD_VALUES = {
    'when': datetime.datetime(2024, 1, 2, 3, 4, 5, 678901),
    'day': datetime.date(2024, 2, 29),
    'uid': uuid.UUID('12345678-1234-5678-1234-567812345678'),
    'obj': Named(),
    'flt': 0.1 + 0.2,
    'big': 2**61 + 7,
    'neg': -(2**60) - 1,
    'small': 42,
    'flag': True,
    'nothing': None,
    'keys': {'x': 1, 'y': 2}.keys(),
    'values': {'x': 1}.values(),
    'items': {'x': 1}.items(),
}
# Sent as arrays or objects: %(key)s of them denies (README, "Known
# differences"), where oslo.policy would compare the str().
CONTAINERS = {
    'tup': ('t1', 't2'),
    'st': {'s1'},
    'fst': frozenset({'f1'}),
    'nested': {'a': {'b': 'v'}},
}


def test_input_building_matches_oslo_policy(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger='oslo_opa')
    keys = list(ODD_VALUES) + list(CONTAINERS)
    rules = {f'k_{k}': f'user_id:%({k})s' for k in keys}
    rules['deep'] = 'user_id:%(nested.a.b)s'
    rules['lit'] = "'named-object':%(obj)s"
    rules['ctx'] = 'role:member and project_id:%(project_id)s'
    out, src = convert_rules(tmp_path, rules)
    enforcer = service(out, cache_size=0)
    ref = reference(src)
    target = dict(ODD_VALUES, **CONTAINERS, project_id='p1')
    snapshot = {k: str(v) for k, v in target.items()}

    def ctx(user_id):
        return oslo_context.RequestContext(
            user_id=user_id, project_id='p1', roles=['Member']
        )

    for key, value in ODD_VALUES.items():
        for user_id in (str(value), str(value) + 'x'):
            expected = ref.enforce(f'k_{key}', target, ctx(user_id))
            got = enforcer.enforce(f'k_{key}', target, ctx(user_id))
            assert got is expected, (key, user_id)
        assert ref.enforce(f'k_{key}', target, ctx(str(value))) is True
    for key, value in CONTAINERS.items():
        assert ref.enforce(f'k_{key}', target, ctx(str(value))) is True
        # Tuples and sets travel as their str(): exact.  A dict has no
        # repr in Rego: the README's known difference, a deny.
        exact = key != 'nested'
        got = enforcer.enforce(f'k_{key}', target, ctx(str(value)))
        assert got is exact, key
    for rule, user_id in (('deep', 'v'), ('lit', 'x'), ('ctx', 'x')):
        expected = ref.enforce(rule, target, ctx(user_id))
        assert enforcer.enforce(rule, target, ctx(user_id)) is expected
    assert enforcer.enforce('lit', target, ctx('x')) is True
    assert enforcer.enforce('ctx', target, ctx('x')) is True
    # Nothing was written into the caller's target.
    assert {k: str(v) for k, v in target.items()} == snapshot
    assert opa_records(caplog, logging.WARNING) == []

    # The input document itself.
    driver = check.decider_for(enforcer.conf).driver
    doc = driver.input_for('k_when', inputs.credentials_dict(ctx('u')), target)
    assert doc['target'] == {'when': '2024-01-02 03:04:05.678901'}
    assert doc['credentials'] == {'user_id': 'u'}
    assert inputs.to_json(target) == {
        'when': '2024-01-02 03:04:05.678901',
        'day': '2024-02-29',
        'uid': '12345678-1234-5678-1234-567812345678',
        'obj': 'named-object',
        'flt': '0.30000000000000004',
        'big': 2**61 + 7,
        'neg': -(2**60) - 1,
        'small': 42,
        'flag': True,
        'nothing': None,
        'keys': "dict_keys(['x', 'y'])",
        'values': 'dict_values([1])',
        'items': "dict_items([('x', 1)])",
        'tup': "('t1', 't2')",
        'st': "{'s1'}",
        'fst': "frozenset({'f1'})",
        'nested': {'a': {'b': 'v'}},
        'project_id': 'p1',
    }
    assert inputs.to_json({'u': Unprintable()}) == {
        'u': '<unprintable Unprintable>'
    }


def test_nul_in_input_denies_with_one_log_line(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger='oslo_opa')
    out, src = convert_rules(tmp_path, {'own': 'user_id:%(owner)s'})
    enforcer = service(out, failure_mode='deny')
    target = {'owner': 'u\x00v'}
    creds = {'user_id': 'u\x00v'}
    assert reference(src).enforce('own', target, dict(creds)) is True
    assert enforcer.enforce('own', target, dict(creds)) is False
    records = opa_records(caplog)
    assert len(records) == 1, [r.getMessage() for r in records]
    assert "'own'" in records[0].getMessage()
    assert 'NUL' in records[0].getMessage()
    # A NUL the rule does not read is projected away.
    assert enforcer.enforce(
        'own', {'owner': 'u', 'x': '\x00'}, {'user_id': 'u', 'y': '\x00'}
    )


# --- 7. secrets --------------------------------------------------------------

SECRETS = ('sEcReT1', 'tOkEn2')

# Evaluation fails on the password itself (to_number of a non-number
# is a builtin error).
LEAKY_MODULE = """package svc.solo

default allow := false

allow if to_number(input.credentials.password) > 0

state := "t" if allow

else := "f"
"""


@pytest.mark.parametrize('failure_mode', ['deny', 'fallback'])
def test_secrets_never_logged(tmp_path, caplog, failure_mode):
    caplog.set_level(logging.DEBUG)
    out, _ = convert_rules(tmp_path, dict(SMALL, own='user_id:%(owner)s'))
    with open(module_file(out, 'solo'), 'w', encoding='utf-8') as f:
        f.write(LEAKY_MODULE)
    with open(module_file(out, 'r'), 'w', encoding='utf-8') as f:
        f.write(EVAL_ERROR_MODULE)
    enforcer = service(out, failure_mode=failure_mode, reload_interval=0)
    creds = {
        'roles': ['a'],
        'user_id': 'u1',
        'password': SECRETS[0],
        'auth_token': SECRETS[1],
    }
    assert enforcer.enforce('own', {'owner': 'u1'}, dict(creds)) is True
    # Failing decisions: evaluation errors, an unknown rule, a NUL.
    enforcer.enforce('solo', {}, dict(creds))
    enforcer.enforce('r', {}, dict(creds))
    enforcer.enforce('other', {}, dict(creds))
    d = check.decider_for(enforcer.conf)
    assert d.decide('no_such_rule', {}, creds) is False
    assert d.decide('own', {'owner': 'u1\x00'}, creds) is False
    assert d.decide_many([('solo', {}), ('own', {'owner': 'u1'})], creds) == [
        False,
        True,
    ]
    assert len(opa_records(caplog, logging.WARNING)) >= 2
    text = '\n'.join(
        f'{r.getMessage()} {r.exc_text or ""} {r.args!r}'
        for r in caplog.records
    )
    text += caplog.text
    for secret in SECRETS:
        assert secret not in text


# --- 8. oslo-config-generator ----------------------------------------------


def test_config_generator_prints_the_options():
    result = subprocess.run(
        [
            sys.executable,
            '-m',
            'oslo_config.generator',
            '--namespace',
            'oslo.opa',
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert '[oslo_opa]' in text
    for line in (
        '#driver = embedded',
        '#rego_path = <None>',
        '#data_path =',
        '#failure_mode = deny',
        '#cache_size = 1024',
        '#cache_ttl = 30.0',
        '#reload_interval = 5.0',
        '#strict_builtin_errors = true',
    ):
        assert line in text.splitlines(), line
    for help_text in (
        'How decisions are made',
        'written by "oslo-opa',
        'merged into the Rego "data"',
        'Deny when no decision can be had',
        'Decisions remembered per',
        'Seconds a remembered decision',
    ):
        assert help_text in text, help_text
    # Every option carries its help text, just above it.
    lines = text.split('[oslo_opa]', 1)[1].splitlines()
    for name in (
        'driver',
        'rego_path',
        'data_path',
        'failure_mode',
        'cache_size',
        'cache_ttl',
    ):
        at = next(i for i, x in enumerate(lines) if x.startswith(f'#{name} ='))
        block = []
        for line in reversed(lines[:at]):
            if not line.startswith('# '):
                break
            block.insert(0, line[2:])
        help_text = ' '.join(block)
        assert 'value)' in help_text, name
        assert len(help_text.split()) >= 8, (name, help_text)


# --- 9. decide_many ----------------------------------------------------------


@pytest.mark.parametrize('cache_size', [0, 64])
def test_decide_many_agrees_with_decide(tmp_path, cache_size):
    rules = dict(SMALL, own='user_id:%(owner)s', proj='project_id:%(p)s')
    out, src = convert_rules(tmp_path, rules)
    d = decider.load(out, cache_size=cache_size)
    ref = reference(src)
    creds = {'roles': ['a', 's'], 'user_id': 'u1', 'project_id': 'p1'}
    requests = [
        ('r', {}),
        ('other', {}),
        ('solo', {}),
        ('own', {'owner': 'u1'}),
        ('own', {'owner': 'u2'}),
        ('own', {}),
        ('proj', {'p': 'p1'}),
        ('proj', {'p': 'p2'}),
        ('no_such_rule', {}),
        ('own', {'owner': 'u1\x00'}),
        ('own', {'owner': 'u1'}),
    ]
    many = d.decide_many(requests, creds)
    assert many == [
        True,
        True,
        True,
        True,
        False,
        False,
        True,
        False,
        False,
        False,
        True,
    ]
    assert all(type(x) is bool for x in many)
    assert many == [d.decide(r, t, creds) for r, t in requests]
    for (rule, target), got in zip(requests[:8], many, strict=False):
        assert got is ref.enforce(rule, target, dict(creds))
    assert d.decide_many([], creds) == []
    ctx = oslo_context.RequestContext(
        user_id='u1', project_id='p2', roles=['S']
    )
    assert d.decide_many(
        [('solo', {}), ('proj', {'p': 'p2'}), ('r', {})], ctx
    ) == [True, True, False]


def test_oslo_policy_reads_the_checks_true_signature():
    """OpaCheck.__call__ carries a stored signature (oslo.policy inspects
    it on every call); it must say what the function takes, current_rule
    included, or oslo.policy would stop passing it."""
    import inspect

    from oslo_opa import check

    code = check.OpaCheck.__call__.__code__
    spec = inspect.getfullargspec(check.OpaCheck('opa', 'r').__call__)
    assert spec.args == list(code.co_varnames[: code.co_argcount])
    assert spec.args[-1] == 'current_rule' and len(spec.args) > 4
