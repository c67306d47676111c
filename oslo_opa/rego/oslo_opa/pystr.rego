# py_str: Python's str() of a JSON scalar.
#
# Shared by the boolean fast path (``_fast``, in ``<rule>.fast.rego``)
# and the three-valued ``state`` (with lib.rego).  The embedded driver
# compiles a rule's fast path with only the library files it calls: a
# query costs time in proportion to all the Rego compiled with it.
package oslo_opa.lib

# py_str(v): Python's str(v) for the JSON values whose str() is known
# here.  Floats arrive as their str() already (see oslo_opa.inputs);
# other numbers, arrays and objects have no result.
py_str(v) := v if is_string(v)

py_str(v) := "True" if v == true

py_str(v) := "False" if v == false

py_str(v) := "None" if is_null(v)

py_str(v) := format_int(v, 10) if {
	is_number(v)
	v == floor(v)
}

_printable(v) if is_string(py_str(v))
