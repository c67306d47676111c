# The operator's own tests of the overlays.  Run them, with the data
# they read, as
#     opa test overlay data
#     oslo-opa test overlay data
# (from examples/keystone-overlays).  They test the overlay's sets
# directly: "reason" in deny[rule] holds only when that reason is given
# (in regopy a key whose bodies all failed may still be an empty set, so
# test the reason, not the key).
package oslo_opa.overlay_test

import data.oslo_opa.overlay

suspended := "suspended users can do nothing"

test_a_suspended_user_is_denied_everything if {
	suspended in overlay.deny["*"] with input as {"credentials": {"roles": ["admin", "Suspended"]}, "target": {}}
}

test_an_active_user_is_not if {
	not suspended in overlay.deny["*"] with input as {"credentials": {"roles": ["admin"]}, "target": {}}
}

test_odd_roles_are_not_suspended if {
	not suspended in overlay.deny["*"] with input as {"credentials": {"roles": "suspended"}, "target": {}}
}

test_the_root_project_is_protected if {
	"protected project" in overlay.deny["identity:delete_project"] with input as {"credentials": {"roles": ["admin"]}, "target": {"target.project.id": "p-root"}}
}

test_other_projects_are_not if {
	not "protected project" in overlay.deny["identity:delete_project"] with input as {"credentials": {"roles": ["admin"]}, "target": {"target.project.id": "p-app"}}
}

test_auditors_read_projects if {
	"member of the auditors group" in overlay.grant["identity:get_project"] with input as {"credentials": {"user_id": "u-audit", "roles": []}, "target": {"target.project.id": "p-app"}}
}

test_others_do_not if {
	not "member of the auditors group" in overlay.grant["identity:get_project"] with input as {"credentials": {"user_id": "u-other", "roles": []}, "target": {"target.project.id": "p-app"}}
}

test_a_manager_of_an_ancestor_updates_a_project if {
	"manager of an ancestor project" in overlay.grant["identity:update_project"] with input as {"credentials": {"project_id": "p-root", "roles": ["manager"]}, "target": {"target.project.id": "p-app"}}
}

test_a_manager_of_the_project_itself_gets_no_grant if {
	not "manager of an ancestor project" in overlay.grant["identity:update_project"] with input as {"credentials": {"project_id": "p-app", "roles": ["manager"]}, "target": {"target.project.id": "p-app"}}
}

test_a_manager_of_a_descendant_does_not if {
	not "manager of an ancestor project" in overlay.grant["identity:update_project"] with input as {"credentials": {"project_id": "p-app", "roles": ["manager"]}, "target": {"target.project.id": "p-team"}}
}

test_a_member_of_an_ancestor_does_not if {
	not "manager of an ancestor project" in overlay.grant["identity:update_project"] with input as {"credentials": {"project_id": "p-root", "roles": ["member"]}, "target": {"target.project.id": "p-app"}}
}
