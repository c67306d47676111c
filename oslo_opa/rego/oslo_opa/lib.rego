# The helper library every converted policy imports.
#
# A converted check does not evaluate to a boolean but to one of three
# states, because oslo.policy has three outcomes:
#   "t"  the check passed,
#   "f"  the check failed,
#   "e"  oslo.policy would raise (walking into a string, a ``roles`` value
#        that is not a list of strings, ...); the whole decision is a deny.
# Errors propagate through ``not``, ``and`` and ``or`` exactly as Python
# exceptions do, and the order of the operands decides which of them
# oslo.policy evaluates at all, so the combinators below keep that order.
#
# Every function here is total: it never raises a builtin error and is
# never undefined for the arguments converted policies pass, so an
# operand that oslo.policy would not evaluate cannot change the result.
#
# rego-cpp (regopy) treats a function's parameters as unbound variables
# inside a comprehension, so every comprehension below reads only
# variables bound in its own body (p := param) first.
package oslo_opa.lib

# any_of(states): oslo.policy's OrCheck, left to right.
any_of(states) := s if {
	ss := states
	found := [x | some x in ss; x != "f"]
	count(found) > 0
	s := found[0]
} else := "f"

# all_of(states): oslo.policy's AndCheck, left to right.
all_of(states) := s if {
	ss := states
	found := [x | some x in ss; x != "t"]
	count(found) > 0
	s := found[0]
} else := "t"

# negate(state): oslo.policy's NotCheck; an error stays an error.
negate(state) := {"t": "f", "f": "t", "e": "e"}[state]

# py_eq(m, v): Python's ``m == str(v)``.  str() of a list or a dict starts
# with "[" or "{", so any other m is simply unequal to it; comparing such
# an m with a container's repr is not supported and denies.
py_eq(m, v) := "t" if {
	py_str(v) == m
} else := "f" if {
	_printable(v)
} else := "f" if {
	is_array(v)
	not startswith(m, "[")
} else := "f" if {
	is_object(v)
	not startswith(m, "{")
} else := "e"

# --- %(key)s substitution -------------------------------------------------
#
# A match string with substitutions arrives as an array of parts:
# a string is literal text, {"key": k} is ``%(k)s`` looked up in the
# target as one flat key (dots and colons are part of the key).

# subst(parts): ["v", string] when every key is present and printable,
# ["f"] when a key is missing (oslo.policy's KeyError, so the check is
# False), ["e"] when a value has no str() here.
subst(parts) := ["f"] if {
	some p in parts
	is_object(p)
	not has(input.target, p.key)
} else := ["e"] if {
	some p in parts
	is_object(p)
	v := input.target[p.key]
	not _printable(v)
	not _container(v)
} else := ["b"] if {
	some p in parts
	is_object(p)
	_container(input.target[p.key])
} else := ["v", text] if {
	ps := parts
	text := concat("", [x | some p in ps; x := _part_str(p)])
}

_container(v) if is_array(v)

_container(v) if is_object(v)

# A text holding the str() of a list or a dict ("b" from subst) is not
# known here, but it holds a "[" or a "{": it can only equal a text
# holding one too.
_bracketed(x) if {
	is_string(x)
	regex.match(`[\[{]`, x)
}

_bracketed(x) if _container(x)

# --- role:<match> ---------------------------------------------------------

# The lower-cased roles of the caller, the way oslo.policy iterates
# creds["roles"]: a list's items, a string's characters, a dict's keys.
roles_lower contains py_lower(r) if {
	roles := input.credentials.roles
	is_array(roles)
	some r in roles
}

roles_lower contains py_lower(c) if {
	roles := input.credentials.roles
	is_string(roles)
	some c in split(roles, "")
}

roles_lower contains py_lower(k) if {
	roles := input.credentials.roles
	is_object(roles)
	some k, _ in roles
}

# x.lower() raises for anything but strings, iterating raises for
# None, numbers and booleans.
_roles_error if {
	roles := input.credentials.roles
	is_array(roles)
	some r in roles
	not is_string(r)
}

_roles_error if {
	roles := input.credentials.roles
	not is_array(roles)
	not is_string(roles)
	not is_object(roles)
}

# role_lowered(m): role check whose match is already lower-cased.
role_lowered(m) := "f" if {
	not has(input.credentials, "roles")
} else := "e" if {
	_roles_error
} else := "t" if {
	m in roles_lower
} else := "f"

# role(parts): role check with substitutions.
role(parts) := r if {
	s := subst(parts)
	s[0] in {"f", "e"}
	r := s[0]
} else := r if {
	subst(parts)[0] == "b"
	r := _role_bracketed(parts)
} else := role_lowered(py_lower(subst(parts)[1]))

# A role check whose match holds the str() of a list or a dict: only a
# role with a bracket and the same (lower-cased) ends might equal it.
_role_bracketed(parts) := "f" if {
	not has(input.credentials, "roles")
} else := "e" if {
	_roles_error
} else := "e" if {
	first := py_lower(_first(parts))
	last := py_lower(_last(parts))
	edges := [substring(first, 0, 1), substring(last, count(last) - 1, 1)]
	some r in roles_lower
	_bracketed(r)
	_ends(r) == edges
} else := "f"

# --- generic checks -------------------------------------------------------

# literal(parts, value): ``<python literal>:<match>``; value is str() of
# the literal, computed by the converter.
literal(parts, value) := r if {
	s := subst(parts)
	s[0] in {"f", "e"}
	r := s[0]
} else := "e" if {
	subst(parts)[0] == "b"
	_bracketed(value)
} else := "f" if {
	subst(parts)[0] == "b"
} else := "t" if {
	subst(parts)[1] == value
} else := "f"

# A walk through the credentials is a list of branches in the order
# oslo.policy's _find_in_dict visits them: ["v", value] still to be
# looked at, ["e"] where it would raise.  A branch whose key is
# missing is False and dropped.
root := [["v", input.credentials]]

# step(branches, key): look key up in every branch; a list found there
# becomes one branch per item (lists are walked at every level).
step(branches, key) := out if {
	bs := branches
	k := key
	out := [n | some b in bs; some n in _step_one(b, k)]
}

_step_one(b, key) := [b] if b[0] == "e"

else := [["e"]] if not is_object(b[1])

else := [] if not has(b[1], key)

else := out if {
	v := b[1][key]
	is_array(v)
	out := [["v", x] | some x in v]
}

else := [["v", b[1][key]]]

# generic(parts, branches): ``<creds path>:<match>``.
generic(parts, branches) := r if {
	s := subst(parts)
	s[0] in {"f", "e"}
	r := s[0]
} else := any_of(leaves) if {
	subst(parts)[0] == "b"
	bs := branches
	edges := [_first(parts), _last(parts)]
	leaves := [x | some b in bs; x := _leaf_bracketed(b, edges)]
} else := any_of(leaves) if {
	bs := branches
	m := subst(parts)[1]
	leaves := [x | some b in bs; x := _leaf(b, m)]
}

_leaf(b, _) := "e" if b[0] == "e"

_leaf(b, m) := py_eq(m, b[1]) if b[0] == "v"

# str() of the value against a text holding a "[" or a "{", whose first
# and last characters are ends (known even where a list or dict was
# substituted: "[" or "{", "]" or "}").  Unequal ends: unequal texts.
_leaf_bracketed(b, ends) := "e" if b[0] == "e"

else := "f" if not _bracketed(b[1])

else := "f" if _ends(b[1]) != ends

else := "e"

_ends(v) := ["[", "]"] if is_array(v)

_ends(v) := ["{", "}"] if is_object(v)

_ends(v) := [substring(v, 0, 1), substring(v, count(v) - 1, 1)] if {
	is_string(v)
	count(v) > 0
}

_ends(v) := ["", ""] if v == ""

# The first and last characters of a substitution's text.
_first(parts) := c if {
	ps := parts
	texts := [t | some p in ps; t := _part_ends(p)[0]; t != ""]
	c := texts[0]
}

_last(parts) := c if {
	ps := parts
	texts := [t | some p in ps; t := _part_ends(p)[1]; t != ""]
	c := texts[count(texts) - 1]
}

_part_ends(p) := _ends(p) if is_string(p)

_part_ends(p) := _ends(v) if {
	is_object(p)
	v := input.target[p.key]
	_container(v)
}

_part_ends(p) := _ends(py_str(v)) if {
	is_object(p)
	v := input.target[p.key]
	not _container(v)
}

# failed(parts): a check oslo.policy raises on once its substitutions
# are done (an unsupported format, a kind ast.literal_eval rejects).
failed(parts) := "f" if {
	subst(parts)[0] == "f"
} else := "e"

# --- the boolean fast path ------------------------------------------------
#
# A converted rule first asks whether any of its checks could raise on
# this input (maybe_error, over-approximated from the helpers below).
# When none can, oslo.policy's three outcomes collapse to two and the
# rule is decided with plain boolean Rego, which is much cheaper than the
# three-valued state; otherwise state decides.

# tidy: no check of any kind can raise on this input, and the fast path
# sees only the shapes it handles: roles (if any) are a list of strings,
# every other credential is a scalar or an empty list (oslo.context's
# service_roles, for most callers: a check walks it and finds nothing,
# and every fast-path comparison of a list is false), every target
# value prints with str().  Computed once per query for all rules.
default tidy := false

tidy if {
	not _roles_odd
	not _odd_credential
	not _odd_target
}

_roles_odd if {
	roles := input.credentials.roles
	not is_array(roles)
}

_roles_odd if {
	some r in input.credentials.roles
	not is_string(r)
}

_odd_credential if {
	some k, v in input.credentials
	k != "roles"
	is_array(v)
	count(v) > 0
}

_odd_credential if {
	some v in input.credentials
	is_object(v)
}

_odd_target if {
	some v in input.target
	not is_string(v)
	not _printable(v)
}
