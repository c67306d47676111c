# str_eq and cred_is: comparison by Python's str(), for the fast path.
#
# The embedded driver swaps this file for plain ``==`` and ``in`` on an
# input where those are the same functions: it sends every int, boolean
# and None as its str() (floats arrive as their str() already), so that
# equal str() means equal values, and no credential is a list.
package oslo_opa.lib

# str_eq(a, b): Python's str(a) == str(b), for scalars.  Two strings
# compare as they are, in one body: the common case spares the py_str
# calls and the other bodies (an engine tries every body of a function).
# A list a (a credential, which oslo.policy's _find_in_dict walks item by
# item) matches when one of its scalar items does; lib.tidy lets no list
# reach here, the embedded driver lets lists of scalars (input_profile).
str_eq(a, b) := a == b if {
	is_string(a)
	is_string(b)
} else := _str_eq(a, b)

_str_eq(a, b) if {
	not is_string(a)
	py_str(a) == py_str(b)
}

_str_eq(a, b) if {
	not is_string(b)
	py_str(a) == py_str(b)
}

_str_eq(a, b) if {
	is_array(a)
	some x in a
	py_str(x) == py_str(b)
}

# cred_is(v, values): str(v) is the text whose typed twins values lists
# (the converter writes them: "True" and true, "1" and 1); for a list v,
# str() of one of its items is.
cred_is(v, values) if v in values

cred_is(v, values) if {
	is_array(v)
	some x in v
	x in values
}
