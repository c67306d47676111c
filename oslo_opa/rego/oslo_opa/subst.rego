# %(key)s substitution into a match, and a credential compared with it.
#
# Shared by the boolean fast path (``_fast``, in ``<rule>.fast.rego``)
# and the three-valued ``state`` (with lib.rego).  The embedded driver
# compiles a rule's fast path with only the library files it calls: a
# query costs time in proportion to all the Rego compiled with it.
package oslo_opa.lib

# has(obj, key): obj is an object holding key (its value may be false or
# null).
has(obj, key) if {
	is_object(obj)
	type_name(obj[key])
}

_part_str(p) := p if is_string(p)

_part_str(p) := py_str(input.target[p.key]) if is_object(p)

# subst_text(parts): the substituted text; undefined when a key is
# missing (oslo.policy's KeyError: the check is False).
subst_text(parts) := text if {
	ps := parts
	every p in ps {
		_part_present(p)
	}
	text := concat("", [x | some p in ps; x := _part_str(p)])
}

_part_present(p) if is_string(p)

_part_present(p) if has(input.target, p.key)

# subst_text_t(parts, t): subst_text with t for the target, for the fast
# path's batch form (convert/batchpath.py).  t is bound in the body
# because regopy does not see a function's parameters in a comprehension.
subst_text_t(parts, t) := text if {
	ps := parts
	tt := t
	every p in ps {
		_part_present_t(p, tt)
	}
	text := concat("", [x | some p in ps; x := _part_str_t(p, tt)])
}

_part_present_t(p, _) if is_string(p)

_part_present_t(p, t) if has(t, p.key)

_part_str_t(p, _) := p if is_string(p)

_part_str_t(p, t) := py_str(t[p.key]) if is_object(p)

# cred_eq(key, m): _find_in_dict(creds, [key], m), when it cannot raise:
# creds[key] is a scalar, or a list of scalars walked item by item.
cred_eq(key, m) if py_str(input.credentials[key]) == m

cred_eq(key, m) if {
	v := input.credentials[key]
	is_array(v)
	some x in v
	py_str(x) == m
}

# items(v): what oslo.policy's _find_in_dict looks at in v: a list's
# items, or v itself.
items(v) := v if is_array(v)

else := [v]

# odd_leaf(v): a value a dotted credential path ends on whose str() the
# fast path does not compare: a dict, or a list holding a container.
odd_leaf(v) if is_object(v)

odd_leaf(v) if {
	is_array(v)
	some x in v
	_walked_container(x)
}

_walked_container(x) if is_array(x)

_walked_container(x) if is_object(x)
