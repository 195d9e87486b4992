"""MLflow Model Registry for nhl: versions with provenance tags, serving by alias, the audit trail.

Everything talks to the project's store: `sqlite:///<project root>/mlruns.db` by default (no
server; the registry lives in the same file), or a tracking server when `MLFLOW_TRACKING_URI`
is set (e.g. `http://mlflow.internal:5000`); the same code serves both. MLflow is imported only
when a function runs.

- `versions`: names (`nhl-{dataset}-{loss}`), tags, registering a run's logged model, lookups.
- `serving`: `load_model_version(name, "champion")`, `parse_model_spec("models:/<name>@champion")`.
- `trail`: `audit_trail(name, "champion")`, the chain data -> validation -> run -> metrics -> promotion.
The gate itself (who gets `champion`) is `nhl.promotion`.
"""

from __future__ import annotations

from nhl.registry.serving import load_model_version, parse_model_spec, state_sha256
from nhl.registry.trail import AuditTrail, audit_trail
from nhl.registry.versions import (
    CHALLENGER,
    CHAMPION,
    get_version,
    model_name,
    nhl_model_names,
    registry_client,
)

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "AuditTrail",
    "audit_trail",
    "get_version",
    "load_model_version",
    "model_name",
    "nhl_model_names",
    "parse_model_spec",
    "registry_client",
    "state_sha256",
]
