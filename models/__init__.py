"""The Tiny Recursive Model that maps one Prometheus alert to one catalog remediation (or none).

Modules, bottom-up:
- `data`:      the runbook policy as a situation table and a seeded generator of labelled alerts;
- `encoding`:  alert -> bounded tensors (hashed word/char features, label slots the output points at);
- `model`:     the TRM (one 2-layer network applied recursively, deep supervision, halting head);
- `selector`:  the public API (`TRMSelector`, `ModelDecision`) with catalog validation of every call;
- `train`, `evaluate`, `baselines`, `speed`: the command-line entry points.
"""
