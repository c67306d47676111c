"""Helpers that run a service's own tests through oslo.opa."""
