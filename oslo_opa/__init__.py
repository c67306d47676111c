"""oslo.opa: oslo.policy decisions made by Open Policy Agent's Rego."""
