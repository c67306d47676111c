# Overlays: what an operator says in Rego beside the converted policy.
#
# An overlay is a module in package oslo_opa.overlay that defines only
#   deny[<rule name>] contains <reason> if ...
#   grant[<rule name>] contains <reason> if ...
# where the rule name "*" means every rule.  Every converted rule asks the
# two functions below about its own name: a deny makes its decision false;
# otherwise a grant makes it true; otherwise its check string decides.
# Rules read through rule:<name> are asked the same way, so an overlay
# holds wherever the rule is decided, as an override in policy.yaml does.
package oslo_opa.lib

# count(): in regopy a key whose every body failed may still be defined,
# as an empty set; in OPA it is undefined.  Either way it has no reason.
overlay_denies(name) if count(data.oslo_opa.overlay.deny[name]) > 0

overlay_denies(_) if count(data.oslo_opa.overlay.deny["*"]) > 0

overlay_grants(name) if count(data.oslo_opa.overlay.grant[name]) > 0

overlay_grants(_) if count(data.oslo_opa.overlay.grant["*"]) > 0
