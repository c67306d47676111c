"""oslo-opa test: Rego tests run on regopy, reported as opa test does.

tests/functional/test_regotest_opa.py checks the outcomes against a real
``opa test``; these tests pin the command's behaviour without OPA.
"""

from __future__ import annotations

import json
import os
import textwrap

import pytest

from oslo_opa import cli, regotest
from oslo_opa.regotest import loader as regotest_loader
from oslo_opa.regotest import patches as regotest_patches
from oslo_opa.regotest import runner as regotest_runner
from oslo_opa.regotest import worker as regotest_worker

FIXTURES = os.path.join(os.path.dirname(__file__), '..', 'fixtures')
TRICKY = os.path.join(FIXTURES, 'regotest', 'tricky')

POLICY = """\
package p

allow if 2 in input.a

admin if "admin" in {lower(r) | some r in input.roles}
"""

TESTS = """\
package p_test

test_allowed if {
	data.p.allow with input as {"a": [1, 2]}
}

test_denied if {
	not data.p.allow with input as {"a": [3]}
}

test_wrong if {
	data.p.allow with input as {"a": [3]}
}
"""


def write(tmp_path, files):
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding='utf-8')
    return str(tmp_path)


def main(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def outcomes(results):
    return {r.full_name: r.outcome for r in results}


# --- exit codes and output ------------------------------------------------


def test_all_pass_exits_0_and_prints_only_the_summary(capsys, tmp_path):
    d = write(
        tmp_path,
        {'p.rego': POLICY, 'p_test.rego': TESTS.split('test_wrong')[0]},
    )
    code, out, err = main(capsys, 'test', d)
    assert (code, err) == (0, '')
    assert out == 'PASS: 2/2\n'


def test_a_failing_test_exits_2_and_is_named(capsys, tmp_path):
    d = write(tmp_path, {'p.rego': POLICY, 'p_test.rego': TESTS})
    code, out, err = main(capsys, 'test', d)
    assert code == 2, out + err
    lines = out.splitlines()
    assert lines[0] == f'{d}/p_test.rego:11:'
    assert lines[1].startswith('data.p_test.test_wrong: FAIL (')
    assert 'test_allowed' not in out
    assert lines[-3:] == ['-' * 80, 'PASS: 2/3', 'FAIL: 1/3']


def test_verbose_reports_every_test(capsys, tmp_path):
    d = write(tmp_path, {'p.rego': POLICY, 'p_test.rego': TESTS})
    code, out, _ = main(capsys, 'test', '-v', d)
    assert code == 2
    lines = out.splitlines()
    assert lines[0] == f'{d}/p_test.rego:3:'
    assert lines[1].startswith('data.p_test.test_allowed: PASS (')
    assert lines[3].startswith('data.p_test.test_denied: PASS (')
    assert lines[5].startswith('data.p_test.test_wrong: FAIL (')
    # opa test -v then lists the failures again.
    assert 'FAILURES' in lines
    assert lines.index('FAILURES') > 5


def test_json_format_has_opa_test_fields(capsys, tmp_path):
    d = write(tmp_path, {'p.rego': POLICY, 'p_test.rego': TESTS})
    code, out, _ = main(capsys, 'test', '--format', 'json', d)
    assert code == 2
    doc = json.loads(out)
    assert [r['name'] for r in doc] == [
        'test_allowed',
        'test_denied',
        'test_wrong',
    ]
    wrong = doc[2]
    assert wrong['package'] == 'data.p_test'
    assert wrong['location'] == {
        'file': f'{d}/p_test.rego',
        'row': 11,
        'col': 1,
    }
    assert wrong['fail'] is True
    assert isinstance(wrong['duration'], int) and wrong['duration'] > 0
    assert 'fail' not in doc[0] and 'error' not in doc[0]


def test_run_matches_the_full_name(capsys, tmp_path):
    d = write(tmp_path, {'p.rego': POLICY, 'p_test.rego': TESTS})
    # Searched anywhere in data.p_test.test_x, as opa test -r does.
    code, out, _ = main(capsys, 'test', '-v', '--run', r'p_test\.test_d', d)
    assert code == 0
    assert 'test_denied: PASS' in out and 'test_allowed' not in out
    assert out.endswith('PASS: 1/1\n')
    code, out, _ = main(capsys, 'test', '-r', 'allowed$|wrong', d)
    assert code == 2 and 'PASS: 1/2' in out
    code, out, _ = main(capsys, 'test', '-r', 'nothing', d)
    assert (code, out) == (0, '')


def test_no_tests_exits_0_unless_fail_on_empty(capsys, tmp_path):
    d = write(tmp_path, {'p.rego': POLICY})
    assert main(capsys, 'test', d) == (0, '', '')
    code, _, err = main(capsys, 'test', '--fail-on-empty', d)
    assert code == 1 and 'no tests were run' in err


def test_skipped_exits_2_unless_z(capsys, tmp_path):
    d = write(
        tmp_path,
        {'t.rego': 'package t\n\ntodo_test_x if false\n\ntest_y := true\n'},
    )
    code, out, _ = main(capsys, 'test', d)
    assert code == 2
    assert 'data.t.todo_test_x: SKIPPED\n' in out
    assert out.endswith('PASS: 1/2\nSKIPPED: 1/2\n')
    assert main(capsys, 'test', '-z', d)[0] == 0


# --- usage errors: exit 1, one line naming the file ------------------------


@pytest.mark.parametrize(
    'files, argv, expected',
    [
        ({}, ['nowhere'], 'nowhere: no such file or directory'),
        ({}, [], 'specify at least one file or directory'),
        (
            {'bad.rego': 'package bad\n\ntest_x if {\n'},
            ['bad.rego'],
            'bad.rego:3:',
        ),
        ({'nopkg.rego': 'test_x := true\n'}, ['nopkg.rego'], 'nopkg.rego'),
        ({'d/x.yaml': 'a: [1\n'}, ['d'], 'x.yaml:'),
        ({'d/x.json': '{"a": '}, ['d'], 'x.json: not valid JSON'),
        ({'x.json': '[1, 2]'}, ['x.json'], 'x.json: data at the root'),
        (
            {'d/a.json': '{"k": 1}', 'd/b.yaml': 'k: 2\n'},
            ['d'],
            'b.yaml: merge error',
        ),
        (
            {'d/t.rego': 'package t\n\ntest_x := 1\n', 'd/c.json': '{"t": 1}'},
            ['d'],
            't.rego:3: conflicting rule for data path t/test_x',
        ),
        ({'t.rego': 'package t\n'}, ['-r', '(', 't.rego'], 'regular exp'),
        ({'t.rego': 'package t\n'}, ['--timeout', '0', 't.rego'], 'timeout'),
    ],
)
def test_cannot_run_exits_1_naming_the_cause(
    capsys, tmp_path, monkeypatch, files, argv, expected
):
    write(tmp_path, files)
    monkeypatch.chdir(tmp_path)
    code, out, err = main(capsys, 'test', *argv)
    assert code == 1, out + err
    assert out == ''
    assert err.startswith('oslo-opa: error: ')
    assert expected in err
    assert len(err.strip().splitlines()) == 1, err
    assert 'Traceback' not in err


def test_the_api_raises_rego_test_error(tmp_path):
    with pytest.raises(regotest.RegoTestError, match='no such file'):
        regotest.run([str(tmp_path / 'missing')])


# --- what counts as a test, and what passes --------------------------------


def test_outcomes_follow_opa_test(tmp_path):
    results = regotest.run([TRICKY])
    # print_test.rego's tests: see the print() output tests below.
    got = {
        k: v
        for k, v in outcomes(results).items()
        if k.startswith('data.tricky_test.')
    }
    expected = {
        'test_pass': 'PASS',
        'test_fail': 'FAIL',
        'test_not_in_braces': 'PASS',
        'test_not_braceless': 'PASS',
        'test_braceless_fails': 'FAIL',
        'test_several_inputs': 'PASS',
        'test_second_expression_fails': 'FAIL',
        'test_multiline_input': 'PASS',
        'test_input_paths': 'PASS',
        'test_with_data': 'PASS',
        'test_with_data_and_input': 'PASS',
        'test_data_file': 'PASS',
        'test_unicode': 'PASS',
        'test_shared_variable': 'PASS',
        'test_shared_variable_fails': 'FAIL',
        'test_keys_not_identifiers': 'PASS',
        'test_bound_input': 'PASS',
        'test_bound_input_fails': 'FAIL',
        'test_bound_input_twice': 'PASS',
        'test_bound_input_twice_second_fails': 'FAIL',
        'test_bound_several': 'PASS',
        'test_bound_data_fails': 'FAIL',
        'test_bound_lookalikes': 'PASS',
        'test_bound_lookalikes_fails': 'FAIL',
        'test_local_hides_rule': 'PASS',
        'test_bound_hides_rule': 'PASS',
        'test_no_with': 'PASS',
        'test_reads_another_test': 'PASS',
        'test_builtin_error_fails': 'FAIL',
        'test_conflict_errors': 'ERROR',
        'test_string_value': 'FAIL',
        'test_number_value': 'FAIL',
        'test_false_value': 'FAIL',
        'test_object_value': 'FAIL',
        'test_default': 'PASS',
        'test_else': 'PASS',
        'test_braceless_else': 'PASS',
        'test_ref_head': 'FAIL',
        'test_set': 'FAIL',
        'test_cases': 'PASS',
        'test_cases_one_false': 'FAIL',
        'test_function': 'ERROR',
        'test_dup': 'FAIL',
        'test_dup#01': 'PASS',
        'test_dup#02': 'PASS',
        'todo_test_later': 'SKIPPED',
    }
    assert got == {f'data.tricky_test.{k}': v for k, v in expected.items()}
    by_name = {r.name: r for r in results}
    assert by_name['test_dup#01'].row == by_name['test_dup'].row + 4
    assert by_name['test_cases'].sub_results == {
        'a': {'name': 'a'},
        'b': {'name': 'b'},
    }
    assert by_name['test_cases_one_false'].sub_results['b']['fail'] is True
    assert 'conflict' in by_name['test_conflict_errors'].error or (
        'multiple outputs' in by_name['test_conflict_errors'].error
    )


def test_data_files_nest_under_their_directories(tmp_path):
    d = write(
        tmp_path,
        {
            'top.json': '{"t": 1}',
            'a/b/x.yaml': 'v: 2\n',
            'a/y.json': '{"w": 3}',
            'a/ignored.txt': 'not data',
            'a/t_test.rego': """\
                package t_test

                test_layout if {
                    data.t == 1
                    data.a.b.v == 2
                    data.a.w == 3
                }
                """,
        },
    )
    assert outcomes(regotest.run([d])) == {'data.t_test.test_layout': 'PASS'}
    # Given as the path itself, a directory's files are data at the root.
    results = regotest.run([os.path.join(d, 'a'), os.path.join(d, 'top.json')])
    assert [r.outcome for r in results] == ['FAIL']


def test_ignore_skips_names_below_the_paths(capsys, tmp_path, monkeypatch):
    write(
        tmp_path,
        {
            'd/a_test.rego': 'package a\n\ntest_a := true\n',
            'd/sub/b_test.rego': 'package b\n\ntest_b := true\n',
            'd/.hid/h_test.rego': 'package h\n\ntest_h := true\n',
            # Clashes with the rule data.b.test_b: loaded, an error.
            'd/b/x.json': '{"test_b": 1}',
        },
    )
    monkeypatch.chdir(tmp_path)

    def names(*argv):
        code, out, err = main(capsys, 'test', '-f', 'json', *argv)
        assert code in (0, 1), err
        return sorted(r['name'] for r in json.loads(out)) if out else err

    assert 'conflicting rule' in names('d')
    assert names('--ignore', 'b', 'd') == ['test_a', 'test_b', 'test_h']
    # A directory's whole tree; repeated, or comma-separated, as opa's.
    assert names('--ignore', 'sub', 'd') == ['test_a', 'test_h']
    assert names('--ignore', 'x.*', '--ignore', '.*', 'd') == [
        'test_a',
        'test_b',
    ]
    assert names('--ignore', '*_test.rego,b', 'd') == []
    # A path given is loaded whatever its name.
    assert names('--ignore', 'd,*.rego', 'd/a_test.rego') == ['test_a']
    # Malformed (Go's filepath.Match): matches nothing.
    assert 'conflicting rule' in names('--ignore', '[b', 'd')


@pytest.mark.parametrize(
    'pattern, name, matches',
    [
        # as Go's filepath.Match decides (checked against it)
        ('*.json', 'x.json', True),
        ('*.json', 'x.yaml', False),
        ('.*', '.hidden', True),
        ('a?c', 'abc', True),
        ('a?c', 'ac', False),
        ('*', '', True),
        ('[^a]', 'b', True),
        ('[^a]', 'a', False),
        ('[a-c]x', 'bx', True),
        ('[b-a]', 'a', False),  # an empty range: not an error
        ('[^b-a]', 'a', True),
        ('\\*', '*', True),
        ('\\*', 'a', False),
        ('[\\]a]', ']', True),
        ('[!a]', 'b', False),  # ! is not ^ in Go
        ('[!a]', '!', True),
        ('x.json', 'X.json', False),
        # malformed: nothing matches
        ('[', '[', False),
        ('[a-]', 'a', False),
        ('[]a]', 'a', False),
        ('a\\', 'a\\', False),
    ],
)
def test_ignore_patterns_are_go_globs(pattern, name, matches):
    rx = regotest_loader._glob(pattern)
    assert bool(rx and rx.fullmatch(name)) is matches


def test_a_test_that_fails_is_reported_failed(tmp_path):
    d = write(
        tmp_path, {'t.rego': 'package t\n\ntest_bad if {\n\t1 == 2\n}\n'}
    )
    [result] = regotest.run([d])
    assert (result.failed, result.passed, result.error) == (True, False, None)


# --- crashes, hangs -----------------------------------------------------


CRASH_TESTS = """\
package p_test

test_before if {
	data.p.allow with input as {"a": [2]}
}

# regopy aborts compiling `with input as <variable>` over a builtin (x
# is read elsewhere too, so it is not taken as the constant).
test_crashes if {
	x := {"a": [2]}
	data.p.allow with input as x
	x.a == [2]
}

test_after if {
	not data.p.allow with input as {"a": [3]}
}
"""


def test_a_test_crashing_the_compiler_is_an_error_alone(tmp_path):
    d = write(tmp_path, {'p.rego': POLICY, 'p_test.rego': CRASH_TESTS})
    results = regotest.run([d])
    assert outcomes(results) == {
        'data.p_test.test_before': 'PASS',
        'data.p_test.test_crashes': 'ERROR',
        'data.p_test.test_after': 'PASS',
    }
    assert results[1].error.startswith('regopy crashed (signal ')
    assert 'compiling it' in results[1].error


# A worker that dies (SIGSEGV, as regopy does) evaluating a test whose
# entrypoint names "boom", and evaluates the others as usual.
_CRASH_ON_BOOM = textwrap.dedent(
    """\
    import os, signal
    from oslo_opa.regotest import worker as r
    real = r._worker_eval
    def crashing(state, steps):
        if any('boom' in entry for entry, _ in steps):
            os.kill(os.getpid(), signal.SIGSEGV)
        return real(state, steps)
    r._worker_eval = crashing
    r._serve()
    """
)


def test_a_test_crashing_the_evaluation_is_an_error_alone(
    tmp_path, monkeypatch
):
    # A worker that dies (SIGSEGV) evaluating one test, as regopy does.
    monkeypatch.setattr(
        regotest_worker,
        '_WORKER',
        _CRASH_ON_BOOM,
    )
    d = write(
        tmp_path,
        {
            't.rego': """\
                package t

                test_a := true

                test_boom := true

                test_c := true
                """
        },
    )
    results = regotest.run([d])
    assert outcomes(results) == {
        'data.t.test_a': 'PASS',
        'data.t.test_boom': 'ERROR',
        'data.t.test_c': 'PASS',
    }
    assert (
        results[1].error == 'regopy crashed (signal 11, SIGSEGV) evaluating it'
    )
    assert results[1].error_code == 'regopy_crash'


def test_a_test_past_the_timeout_is_an_error(tmp_path):
    d = write(
        tmp_path,
        {
            'h.rego': """\
                package h

                # regopy never returns from this.
                test_hangs if regex.split("", "abc") == ["a", "b", "c"]

                test_after := true
                """
        },
    )
    results = regotest.run([d], timeout=1)
    assert outcomes(results) == {
        'data.h.test_hangs': 'ERROR',
        'data.h.test_after': 'PASS',
    }
    assert results[0].error == 'timed out after 1 s evaluating it'


# --- the rewrites regopy needs --------------------------------------------


def scan(text):
    module = regotest._scan('m.rego', textwrap.dedent(text))
    regotest._name_tests([module])
    regotest._split_tests([module])
    return module


def test_rewrites_keep_every_line_in_place():
    module = scan(
        """\
        package m

        r if { x := 1; x == 1; p with input as {
            "a": [1,
                  2],
            # comment
            "b-c": `raw`,
        } }

        q if not p with input as {"a": 1}
        """
    )
    text = module.render()
    assert text.count('\n') == module.text.count('\n')
    assert 'with input.a as ([1,\n          2]) with input["b-c"] as' in text
    assert 'q if { not p with input.a as (1) }' in text
    assert 'with input as' not in text


def test_independent_expressions_are_split():
    module = scan(
        """\
        package m

        import data.lib.f

        test_split if {
            f(1) with input as {"a": 1}
            not allow with input.b.c as "x" with data.d as 2
            count([y | some y in [1]]) == 1
        }

        test_shared if {
            x := f(1) with input as {"a": 1}
            x == 1
        }
        """
    )
    split, shared = module.tests
    assert shared.steps is None
    assert [s.input_term for s in split.steps] == [
        '{"a": 1}',
        '{"b": {"c": "x"}}',
        None,
    ]
    helpers = split.helpers
    assert 'f(1)\n' in helpers
    assert 'not allow with data.d as 2\n' in helpers
    assert 'with input' not in helpers


def test_constants_bound_to_a_variable_are_written_in_its_withs():
    module = scan(
        """\
        package m

        test_one if {
            inp := {"credentials": {"roles": ["reader"]}, "target": {}}
            allow with input as inp
        }

        test_twice if {
            inp := {
                "a": 1,
            }; r := ["x"]
            allow with input as inp
            not deny with input.credentials.roles as r with data.d as inp
            object.get({"inp": 1}, "inp", 0) == input.inp
        }
        """
    )
    one, twice = module.tests
    assert [s.input_term for s in one.steps] == [
        '{"credentials": {"roles": ["reader"]}, "target": {}}'
    ]
    assert 'inp' not in one.helpers
    # Used twice, one of two bindings; a string, a key or a field named
    # like it is not it.
    inp = '{\n        "a": 1,\n    }'
    assert [s.input_term for s in twice.steps] == [
        inp,
        '{"credentials": {"roles": ["x"]}}',
        None,
    ]
    assert f'not deny with data.d as {inp}\n' in twice.helpers
    assert ':=' not in twice.helpers


@pytest.mark.parametrize(
    'body',
    [
        # read elsewhere too
        'inp := {"a": 1}\nallow with input as inp\ninp.a == 1',
        # in a comprehension, where it may be a variable of its own
        'inp := 1\nallow with input as inp\n[inp | some inp in [2]]',
        # a variable key
        'inp := "a"\nallow with input as inp\n{inp: 1} == {"a": 1}',
        # not the value of a with
        'inp := 1\nallow with input as inp\nx := 2 + inp',
        # in a constant, not the whole value
        'inp := 1\nallow with data.x as {"a": inp}',
        # a reference into it
        'inp := {"a": 1}\nallow with data.x as inp.a',
        # not literals: a reference may be undefined, the rest computed
        'inp := [{"a": 1}][1]\nallow with input as inp',
        'inp := 2 - 1\nallow with input as inp',
        'inp := f(1)\nallow with input as inp',
        'inp := {"a": x}\nallow with input as inp',
        # used before it is bound
        'allow with input as inp\ninp := {"a": 1}',
        # each _ is a variable of its own
        '_ := {"a": 1}\nallow with input as _',
        # = unifies: not a declaration
        'inp = {"a": 1}\nallow with input as inp',
    ],
)
def test_bindings_not_provably_constants_stay_as_written(body):
    body = body.replace('\n', '\n\t')
    module = scan(f'package m\n\ntest_x if {{\n\t{body}\n}}\n')
    [test] = module.tests
    assert (test.steps, test.helpers) == (None, '')
    assert body.split('\n')[0] in module.render()  # compiled as written


def test_a_local_named_like_a_rule_is_a_variable():
    module = scan(
        """\
        package m

        import data.lib.roles

        limit := 3

        test_assigned if {
            limit := 5
            limit == 5
        }

        test_some if {
            some roles in [["a"]]
            count(roles) == 1
        }

        test_rule if {
            limit == 3
            count(roles) == 1
        }
        """
    )
    assigned, some, rule = module.tests
    assert (assigned.steps, some.steps) == (None, None)
    assert len(rule.steps) == 2


# --- with data.P as C: a variant of the modules and data -------------------

# Outcomes checked against opa test (v1.22.3).
WITH_DATA = {
    'ov.rego': """\
        package ov

        deny["del"] contains "deletes are off" if true
        """,
    'u.rego': """\
        package u

        allow if not denied

        denied if count(data.ov.deny[input.rule]) > 0

        limit_ok if input.n <= data.cfg.limit
        """,
    'cfg/values.json': '{"limit": 3}',
    'q.rego': """\
        package q

        level := data.q.h.level

        twice := data.q.h.double(1)
        """,
    'q/h.rego': """\
        package q.h

        double(x) := 2 * x

        level := 1
        """,
    't_test.rego': """\
        package t

        test_off if {
            data.u.allow with input.rule as "del" with data.ov as {}
        }

        test_on if {
            not data.u.allow with input.rule as "del"
        }

        test_denied_by_data if {
            not data.u.allow with input as {"rule": "get"} with data.ov as {
                "deny": {"get": ["by data"]},
            }
        }

        test_limit if {
            data.u.limit_ok with input.n as 5 with data.cfg.limit as 10
        }

        test_limit_fails if {
            data.u.limit_ok with input.n as 5 with data.cfg.limit as 4
        }

        test_limit_as_loaded if {
            not data.u.limit_ok with input.n as 5
        }

        test_nowhere if {
            data.new.k == [1, "a"] with data.new.k as [1, "a"]
        }

        test_function_below if {
            data.q.h.other == 2 with data.q.h as {"other": 2}
        }

        test_set if {
            data.cfg.limit == {3} with data.cfg.limit as {3}
        }

        test_variants_differ if {
            data.u.limit_ok with input.n as 5 with data.cfg.limit as 10
            not data.u.limit_ok with input.n as 5
        }
        """,
}

WITH_DATA_OUTCOMES = {
    'test_off': 'PASS',
    'test_on': 'PASS',
    'test_denied_by_data': 'PASS',
    'test_limit': 'PASS',
    'test_limit_fails': 'FAIL',
    'test_limit_as_loaded': 'PASS',
    'test_nowhere': 'PASS',
    'test_function_below': 'PASS',
    'test_set': 'PASS',
    'test_variants_differ': 'PASS',
}


def record_loads(monkeypatch):
    """What each compilation is given: (module files, data, tests)."""
    loads = []
    real = regotest_runner._Runner._load

    def load(self, worker, texts, tests, patch=()):
        loads.append(
            (
                {os.path.basename(name) for name, _ in texts},
                self._data(texts, patch),
                {t.name for t in tests},
            )
        )
        return real(self, worker, texts, tests, patch)

    monkeypatch.setattr(regotest_runner._Runner, '_load', load)
    return loads


def load_of(loads, test):
    [found] = [(files, data) for files, data, tests in loads if test in tests]
    return found


def test_with_data_runs_without_the_package_it_replaces(tmp_path, monkeypatch):
    d = write(tmp_path, WITH_DATA)
    loads = record_loads(monkeypatch)
    results = regotest.run([d])
    assert outcomes(results) == {
        f'data.t.{k}': v for k, v in WITH_DATA_OUTCOMES.items()
    }
    # The overlay-like package is left out, its data is the constant.
    files, data = load_of(loads, 'test_off')
    assert 'ov.rego' not in files and 'u.rego' in files
    assert data['ov'] == {}
    # A constant other than {}: a rule path's value (not a conflict).
    files, data = load_of(loads, 'test_denied_by_data')
    assert 'ov.rego' not in files
    assert data['ov'] == {'deny': {'get': ['by data']}}
    # The tests without the modifier, in the same module: as loaded.
    files, data = load_of(loads, 'test_on')
    assert 'ov.rego' in files and 'ov' not in data
    # Compiled as written, regopy 1.5.2 merges {} with the rules (OPA
    # replaces them): the variant is what makes test_off pass.
    monkeypatch.setattr(
        regotest_patches.Patches, '_replaceable', lambda self, path: False
    )
    unpatched = outcomes(regotest.run([d], run='test_o'))
    assert unpatched == {'data.t.test_off': 'FAIL', 'data.t.test_on': 'PASS'}


def test_with_data_where_no_module_is_only_patches_the_data(
    tmp_path, monkeypatch
):
    d = write(tmp_path, WITH_DATA)
    loads = record_loads(monkeypatch)
    results = regotest.run([d], run='test_limit|test_nowhere')
    assert outcomes(results) == {
        f'data.t.{k}': WITH_DATA_OUTCOMES[k]
        for k in ('test_limit', 'test_limit_fails', 'test_limit_as_loaded')
        + ('test_nowhere',)
    }
    for test, cfg in [
        ('test_limit', {'limit': 10}),
        ('test_limit_fails', {'limit': 4}),
        ('test_limit_as_loaded', {'limit': 3}),  # the file's data
    ]:
        files, data = load_of(loads, test)
        assert data['cfg'] == cfg
        assert {'u.rego', 'ov.rego', 't_test.rego'} <= files
    _, data = load_of(loads, 'test_nowhere')
    assert data['new'] == {'k': [1, 'a']}


def test_variant_batches_leave_other_tests_as_they_were(tmp_path):
    d = write(tmp_path, WITH_DATA)
    everything = outcomes(regotest.run([d]))
    # Without the tests that take a variant, in the same module.
    names = 'test_on|test_limit_as_loaded|test_function_below|test_set'
    alone = outcomes(regotest.run([d], run=rf'\.({names})$'))
    assert len(alone) == 4
    assert alone == {k: everything[k] for k in alone}


def test_fall_backs_compile_the_modifier_and_agree_with_opa(tmp_path):
    d = write(tmp_path, WITH_DATA)
    modules, data = regotest_loader._load([d])
    regotest._name_tests(modules)
    regotest._split_tests(modules, data)
    tests = {t.name: t for m in modules for t in m.tests}
    for name in ('test_function_below', 'test_set', 'test_variants_differ'):
        assert tests[name].patch == ()
        assert ' with data.' in tests[name].helpers
    assert tests['test_off'].patch == ((('ov',), '{}'),)
    assert ' with data.' not in tests['test_off'].helpers
    results = outcomes(regotest.run([d], run='_function|t_set|_differ'))
    assert results == {
        f'data.t.{k}': WITH_DATA_OUTCOMES[k]
        for k in ('test_function_below', 'test_set', 'test_variants_differ')
    }


def test_a_data_patch_is_no_conflict_a_data_file_is(tmp_path):
    files = dict(WITH_DATA)
    # Data beside the rules of package ov; a test gives ov.deny a value.
    files['ov/extra.json'] = '{"note": "n"}'
    d = write(tmp_path, files)
    results = outcomes(regotest.run([d], run='test_denied_by_data'))
    assert results == {'data.t.test_denied_by_data': 'PASS'}
    write(tmp_path, {'ov/bad.json': '{"deny": 1}'})
    with pytest.raises(regotest.RegoTestError, match='conflicting rule'):
        regotest.run([d], run='test_denied_by_data')


def scan_all(texts, data=None):
    modules = [
        regotest._scan(f'm{n}.rego', textwrap.dedent(text))
        for n, text in enumerate(texts)
    ]
    regotest._name_tests(modules)
    regotest._split_tests(modules, data)
    return modules


def patch_of(modules, body, data=None, package='t'):
    body = body.replace('\n', '\n\t')
    test_module = f'package {package}\n\ntest_x if {{\n\t{body}\n}}\n'
    [*_, module] = scan_all([*modules, test_module], data)
    [test] = module.tests
    assert test.steps is not None
    stays = ' with data' in test.helpers
    assert stays is not bool(test.patch)
    return test.patch


@pytest.mark.parametrize(
    'value, expected',
    [
        ('{}', '{}'),
        ('[]', '[]'),
        (
            '{"b-c": {}, "a": [1, -2.5, true, false, null, "é"]}',
            '{"a":[1,-2.5,true,false,null,"é"],"b-c":{}}',
        ),
        (
            '{\n  "b": `raw`,\n  # comment\n  "a": [1,\n  2,],\n}',
            '{"a":[1,2],"b":"raw"}',
        ),
        ('-0', '0'),
        ('1.5', '1.5'),
        ('12345678901234567890', '12345678901234567890'),
        ('"plain"', '"plain"'),
    ],
)
def test_with_data_constants_that_are_plain_json(value, expected):
    patch = patch_of([], f'data.a.x with data.a["b-c"] as {value}')
    assert patch == ((('a', 'b-c'), expected),)


@pytest.mark.parametrize(
    'value',
    [
        '{"x"}',  # a set
        'set()',
        '"a\\"b"',  # escapes: regopy keeps them
        '"\\u00e9"',
        '`a\\b`',  # what JSON would escape
        '`a"b`',
        '"a\tb"',  # a control character
        '1e3',  # numbers not written back as read
        '0.10',
        '{1: 2}',  # a key that is not a string
        '{"a": 1, "a": 1}',
        'data.c',  # not constants
        '1 + 1',
        '[1][0]',
        'x',
    ],
)
def test_with_data_constants_not_plain_json_stay(value):
    assert patch_of([], f'data.a.x with data.a as {value}') == ()
    assert patch_of([], 'data.a.x with data.a as {"k": 1}') != ()


Q_CONF = 'package q\n\nconf := {"a": 1}\n'
Q_SUB = 'package q\n\nsub.x := 1\n'
QH_LEVEL = 'package q.h\n\nlevel := 1\n'
QH_FUNCTION = 'package q.h\n\nlevel := 1\n\nf(x) := x\n'
WITH_C = 'data.c.x with data.c.x as 1'


@pytest.mark.parametrize(
    'modules, honoured, stays, data',
    [
        # A rule at a proper prefix of P (OPA: a compile error).
        (
            [Q_CONF],
            'data.q.conf with data.q as {}',
            'data.q.conf.a with data.q.conf.a as 2',
            None,
        ),
        # A rule at or below P in a module whose package is not.
        (
            [Q_SUB],
            'data.q.sub with data.q as {}',
            'data.q.sub with data.q.sub as {}',
            None,
        ),
        (
            [Q_CONF],
            'true with data.q as {}',
            'true with data.q.conf as {}',
            None,
        ),
        # A function in a module left out.
        ([QH_LEVEL], 'data.q.h.level with data.q as {}', None, None),
        ([QH_FUNCTION], None, 'data.q.h.level with data.q as {}', None),
        # The test's own module would be left out.
        (
            [],
            'data.t2.x with data.t2 as {}',
            'data.t.x with data.t as {}',
            None,
        ),
        # Data above P that is not an object.
        (
            [],
            'data.c.k with data.c.k as {}',
            'data.c.k with data.c.k.x as {}',
            {'c': {'k': 3}},
        ),
        # P is not a ground reference below data.
        ([], 'data.c with data.c as {}', 'data.c with data as {}', None),
        (
            [],
            'data.c with data.c["1"] as {}',
            'data.c with data.c[1] as {}',
            None,
        ),
        # One step's targets overlap, or one cannot be honoured.
        (
            [],
            'true with data.c as {} with data.d.e as 1',
            'true with data.c as {} with data.c.e as 1',
            None,
        ),
        (
            [Q_CONF],
            'true with data.c as {} with data.q as {}',
            'true with data.c as {} with data.q.conf as 1',
            None,
        ),
        # Steps in different variants (each stays).
        ([], f'{WITH_C}\n{WITH_C}', f'{WITH_C}\n{WITH_C[:-1]}2', None),
        ([], f'{WITH_C}\n{WITH_C}', f'{WITH_C}\ndata.c.y', None),
    ],
)
def test_with_data_falls_back_where_a_variant_is_not_opa(
    modules, honoured, stays, data
):
    # Each row: a modifier a variant honours, one that differs from it
    # by the condition that fails.
    if honoured is not None:
        assert patch_of(modules, honoured, data) != ()
    if stays is not None:
        assert patch_of(modules, stays, data) == ()


@pytest.mark.parametrize(
    'ns, text',
    [
        (0, '0s'),
        (999, '999ns'),
        (458674, '458.674µs'),
        (1000, '1µs'),
        (2_793_829, '2.793829ms'),
        (1_500_000_000, '1.5s'),
        (61_000_000_000, '1m1s'),
    ],
)
def test_durations_print_as_go_does(ns, text):
    assert regotest.go_duration(ns) == text


# --- print() output ---------------------------------------------------------

PRINTS = """\
package pr

import data.p

test_passes if {
	print("pass", 1)
	print("again")
	p.allow with input as {"a": [2]}
}

test_silent if true

# Independent expressions: one query each, run until one is not true.
test_split if {
	print("one")
	p.allow with input as {"a": [2]}
	print("two")
	p.allow with input as {"a": [3]}
	print("three")
}

test_cases[n] if {
	some n in ["x", "y"]
	print("case", n)
}

test_fails if {
	print("  spaced  ")
	print("")
	print("é")
	false
}
"""


def test_print_output_belongs_to_its_test_in_order(tmp_path):
    d = write(tmp_path, {'p.rego': POLICY, 'pr_test.rego': PRINTS})
    results = regotest.run([d])
    assert {r.name: r.output for r in results} == {
        'test_passes': b'pass 1\nagain\n',
        'test_silent': b'',
        'test_split': b'one\ntwo\n',
        'test_cases': b'case x\ncase y\n',
        'test_fails': '  spaced  \n\né\n'.encode(),
    }
    assert outcomes(results)['data.pr.test_split'] == 'FAIL'
    # test_split did run as several queries.
    module = scan(PRINTS)
    assert len(module.tests[2].steps) == 5


def test_print_output_survives_a_crash_of_another_test(tmp_path, monkeypatch):
    # The worker restarted after test_boom still reports print() output.
    monkeypatch.setattr(
        regotest_worker,
        '_WORKER',
        _CRASH_ON_BOOM,
    )
    d = write(
        tmp_path,
        {
            't.rego': """\
                package t

                test_a if print("a")

                test_boom := true

                test_c if print("c")
                """
        },
    )
    results = regotest.run([d])
    assert [(r.outcome, r.output) for r in results] == [
        ('PASS', b'a\n'),
        ('ERROR', b''),
        ('PASS', b'c\n'),
    ]


def test_rego_cpp_log_stays_out_of_print_output(tmp_path, monkeypatch):
    # rego-cpp logs on fd 1, as print() writes: a worker whose
    # interpreters start logging still reports only print() output.
    monkeypatch.setattr(
        regotest_worker,
        '_WORKER',
        textwrap.dedent(
            """\
            import regopy
            from regopy import rego_shared as rs
            from oslo_opa.regotest import worker as r
            class Loud(regopy.Interpreter):
                def __init__(self):
                    super().__init__()
                    self.log_level = rs.LogLevel.DEBUG
            regopy.Interpreter = Loud
            r._serve()
            """
        ),
    )
    d = write(tmp_path, {'p.rego': POLICY, 'pr_test.rego': PRINTS})
    results = regotest.run([d], run='test_passes')
    assert [r.output for r in results] == [b'pass 1\nagain\n']


def printed(**kw):
    return regotest.TestResult(
        package='data.pr', name='test_x', file='pr_test.rego', row=3, **kw
    )


def test_text_shows_print_output_as_opa_test_does():
    quiet = printed(output=b'')
    passes = printed(output=b'pass\n', duration_ns=1000)
    fails = printed(
        failed=True, output='  a  \n\n b\né\n'.encode(), duration_ns=2000
    )
    out = regotest.render_text([quiet, passes, fails])
    # Without -v only the failing test, its output trimmed as a whole,
    # every line indented (an empty one too), between empty lines.
    assert out.split('-' * 80)[0].split('\n') == [
        'pr_test.rego:3:',
        'data.pr.test_x: FAIL (2µs)',
        '',
        '  a  ',
        '  ',
        '   b',
        '  é',
        '',
        '',
    ]
    verbose = regotest.render_text([quiet, passes, fails], verbose=True)
    assert verbose.startswith(
        'pr_test.rego:3:\n'
        'data.pr.test_x: PASS (0s)\n'
        'pr_test.rego:3:\n'
        'data.pr.test_x: PASS (1µs)\n'
        '\n'
        '  pass\n'
        '\n'
        'pr_test.rego:3:\n'
        'data.pr.test_x: FAIL (2µs)\n'
        '\n'
        '  a  \n'
    )
    # The FAILURES section does not repeat it.
    assert verbose.count('  pass\n') == 1


def test_text_shows_output_after_cases_and_before_an_error():
    cases = printed(
        sub_results={'a': {'name': 'a'}}, output=b'case a\n', duration_ns=5
    )
    error = printed(error='boom', output=b'before\n', duration_ns=5)
    out = regotest.render_text([cases, error], verbose=True)
    assert out.startswith(
        'pr_test.rego:3:\n'
        'data.pr.test_x: PASS (5ns)\n'
        '  a: PASS\n'
        '\n'
        '  case a\n'
        '\n'
        'pr_test.rego:3:\n'
        'data.pr.test_x: ERROR (5ns)\n'
        '\n'
        '  before\n'
        '\n'
        '  boom\n'
    )


def test_json_has_print_output_in_base64_after_duration():
    subs = {'a': {'name': 'a'}}
    doc = printed(output=b'hi \xff\n', sub_results=subs).as_dict()
    assert list(doc)[-3:] == ['duration', 'output', 'sub_results']
    assert doc['output'] == 'aGkg/wo='
    assert 'output' not in printed().as_dict()
