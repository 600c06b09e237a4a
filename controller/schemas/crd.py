"""The RemediationPolicy custom resource's identity, in one place (the CRD in `crds/` says the same)."""

GROUP = "remediation.homelab.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
PLURAL = "remediationpolicies"
KIND = "RemediationPolicy"
