# roles_list_lower: the caller's roles, lower-cased as Python does.
#
# Shared by the boolean fast path (``_fast``, in ``<rule>.fast.rego``)
# and the three-valued ``state`` (with lib.rego).  The embedded driver
# compiles a rule's fast path with only the library files it calls: a
# query costs time in proportion to all the Rego compiled with it.
package oslo_opa.lib

# roles_list_lower: the lower-cased roles, when they are a list.
roles_list_lower contains py_lower(r) if {
	some r in input.credentials.roles
}
