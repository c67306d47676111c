# str_eq: comparison by Python's str(), for the fast path.
#
# The embedded driver swaps this file for ``str_eq(a, b) if a == b`` on
# an input where that is the same function: no string in it reads like
# the str() of a non-string ("True", "False", "None", digits), so equal
# str() means equal values (floats arrive as their str() already).
package oslo_opa.lib

# str_eq(a, b): Python's str(a) == str(b), for scalars.  Two strings
# compare as they are: the common case spares the py_str calls.
str_eq(a, b) if {
	is_string(a)
	a == b
}

str_eq(a, b) if {
	not is_string(a)
	py_str(a) == py_str(b)
}

str_eq(a, b) if {
	not is_string(b)
	py_str(a) == py_str(b)
}
