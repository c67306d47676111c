# Customizations of keystone's converted policy.  Each rule below denies
# or grants one oslo.policy rule (or every rule, "*") for a reason; the
# converted rules consult them wherever they are decided, through
# rule:admin_required and the like too.  The relationships they read
# (groups, the project hierarchy, protected projects) are data: data.json.
package oslo_opa.overlay

# A user holding the "suspended" role can do nothing at all.
deny["*"] contains "suspended users can do nothing" if {
	some role in input.credentials.roles
	is_string(role)
	lower(role) == "suspended"
}

# The root project cannot be deleted, not even by an admin.
deny["identity:delete_project"] contains "protected project" if {
	data.protected_projects[input.target["target.project.id"]]
}

# Members of the auditors group read every project (ReBAC: membership
# is kept as data, not as a role in keystone).
grant["identity:get_project"] contains "member of the auditors group" if {
	input.credentials.user_id in data.groups.auditors
}

# A manager of a project manages the projects below it: the hierarchy
# is kept as data (project -> [its parent]).
grant["identity:update_project"] contains "manager of an ancestor project" if {
	some role in input.credentials.roles
	is_string(role)
	lower(role) == "manager"
	project := input.target["target.project.id"]
	some ancestor in graph.reachable(data.project_parents, {project})
	ancestor != project
	ancestor == input.credentials.project_id
}
