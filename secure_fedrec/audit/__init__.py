"""End-to-end privacy audits of a federated run: canaries in, attacks on, ε̂ next to ε.

``secure-fedrec audit --config FILE.toml --out DIR`` trains the configured run
with canaries, runs the membership, update-inference and one-run audits of
:mod:`attacks`, and writes ``audit.json`` with ROC and ε̂-vs-ε plots.
"""

from .run import AuditDeltaWarning, audit_config, run_audit
from .spec import AuditSpec, AuditSpecError, spec_from_dict, split_audit_table

__all__ = ["AuditDeltaWarning", "AuditSpec", "AuditSpecError", "audit_config", "run_audit", "spec_from_dict",
           "split_audit_table"]
