# Tests of the helper library.  Run by `opa test` and, without OPA, by
# tests/unit/test_rego_library.py.  Bodies are always braced: regopy
# rejects `test_x if not y with input as {...}`.
package oslo_opa.lib_test

import data.oslo_opa.lib

test_any_of_keeps_order if {
	lib.any_of(["f", "t", "e"]) == "t"
	lib.any_of(["f", "e", "t"]) == "e"
	lib.any_of(["f", "f"]) == "f"
	lib.any_of([]) == "f"
}

test_all_of_keeps_order if {
	lib.all_of(["t", "f", "e"]) == "f"
	lib.all_of(["t", "e", "f"]) == "e"
	lib.all_of(["t", "t"]) == "t"
	lib.all_of([]) == "t"
}

test_negate_keeps_errors if {
	lib.negate("t") == "f"
	lib.negate("f") == "t"
	lib.negate("e") == "e"
}

test_py_eq_is_python_str if {
	lib.py_eq("True", true) == "t"
	lib.py_eq("true", true) == "f"
	lib.py_eq("False", false) == "t"
	lib.py_eq("None", null) == "t"
	lib.py_eq("1", 1) == "t"
	lib.py_eq("1", "1") == "t"
	lib.py_eq("01", 1) == "f"
	lib.py_eq("-3", -3) == "t"
	lib.py_eq("x", ["x"]) == "f"
	lib.py_eq("x", {"x": 1}) == "f"
	lib.py_eq("['x']", ["x"]) == "e"
}

test_subst_reads_flat_target_keys if {
	lib.subst(["a-", {"key": "target.project.id"}, "-b"]) == ["v", "a-p1-b"] with input as {"target": {"target.project.id": "p1"}}
	lib.subst([{"key": "n:x"}, {"key": "k"}]) == ["v", "True7"] with input as {"target": {"n:x": true, "k": 7}}
	lib.subst([{"key": "missing"}]) == ["f"] with input as {"target": {}}
	lib.subst([{"key": "a"}]) == ["b"] with input as {"target": {"a": [1]}}
	lib.subst([{"key": "a"}]) == ["e"] with input as {"target": {"a": 1.5}}
	lib.subst([{"key": "a"}, {"key": "gone"}]) == ["f"] with input as {"target": {"a": [1]}}
}

test_roles_are_case_insensitive if {
	lib.role_lowered("admin") == "t" with input as {"credentials": {"roles": ["Member", "ADMIN"]}}
	lib.role_lowered("admin") == "f" with input as {"credentials": {"roles": ["member"]}}
	lib.role_lowered("admin") == "f" with input as {"credentials": {}}
	lib.role([{"key": "r"}]) == "t" with input as {"credentials": {"roles": ["reader"]}, "target": {"r": "READER"}}
	lib.role([{"key": "r"}]) == "f" with input as {"credentials": {"roles": ["reader"]}, "target": {}}
}

test_bad_roles_raise_like_oslo_policy if {
	lib.role_lowered("a") == "e" with input as {"credentials": {"roles": null}}
	lib.role_lowered("a") == "e" with input as {"credentials": {"roles": ["a", 1]}}
	lib.role_lowered("a") == "e" with input as {"credentials": {"roles": 3}}
}

test_roles_string_and_dict_iterate_like_python if {
	# A string's characters, a dict's keys.
	lib.role_lowered("a") == "t" with input as {"credentials": {"roles": "Abc"}}
	lib.role_lowered("abc") == "f" with input as {"credentials": {"roles": "abc"}}
	lib.role_lowered("x") == "t" with input as {"credentials": {"roles": {"X": 1}}}
}

test_generic_walks_lists_at_every_level if {
	lib.generic(["p1"], lib.step(lib.step(lib.root, "token"), "id")) == "t" with input as {"credentials": {"token": [{"id": "p0"}, {"id": ["x", "p1"]}]}}
	lib.generic(["p1"], lib.step(lib.step(lib.root, "token"), "id")) == "f" with input as {"credentials": {"token": [{"other": 1}]}}
	lib.generic(["p1"], lib.step(lib.step(lib.root, "token"), "id")) == "f" with input as {"credentials": {}}
}

test_generic_raises_walking_into_scalars if {
	lib.generic(["p1"], lib.step(lib.step(lib.root, "token"), "id")) == "e" with input as {"credentials": {"token": "s"}}
	lib.generic(["p1"], lib.step(lib.step(lib.root, "token"), "id")) == "e" with input as {"credentials": {"token": null}}

	# The first branch decides: a match before the error wins.
	lib.generic(["p1"], lib.step(lib.step(lib.root, "token"), "id")) == "t" with input as {"credentials": {"token": [{"id": "p1"}, 5]}}
	lib.generic(["p1"], lib.step(lib.step(lib.root, "token"), "id")) == "e" with input as {"credentials": {"token": [5, {"id": "p1"}]}}
}

test_literal_compares_substitution if {
	lib.literal([{"key": "d"}], "None") == "t" with input as {"target": {"d": null}}
	lib.literal([{"key": "d"}], "None") == "t" with input as {"target": {"d": "None"}}
	lib.literal([{"key": "d"}], "None") == "f" with input as {"target": {"d": "x"}}
	lib.literal([{"key": "d"}], "None") == "f" with input as {"target": {}}
}

test_failed_is_false_only_when_a_key_is_missing if {
	lib.failed([{"key": "k"}]) == "f" with input as {"target": {}}
	lib.failed([{"key": "k"}]) == "e" with input as {"target": {"k": 1}}
	lib.failed([]) == "e"
}

test_tidy_admits_only_shapes_the_fast_path_decides if {
	lib.tidy with input as {"credentials": {"roles": ["a"], "service_roles": [], "n": 1}, "target": {"p": null}}
	not lib.tidy with input as {"credentials": {"service_roles": ["service"]}, "target": {}}
	not lib.tidy with input as {"credentials": {"x": {}}, "target": {}}
	not lib.tidy with input as {"credentials": {"roles": "a"}, "target": {}}
	not lib.tidy with input as {"credentials": {}, "target": {"p": []}}
}
