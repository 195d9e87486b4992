"""The audit trail of a registered version: data -> validation -> training run -> metrics -> promotion.

Each link is read back from the store (version tags, the training run's params, tags, metrics
and artifacts) and cross-checked against the link before it: the validation result must be the
one that passed on the data the run trained on (its id is recomputed from the copy in the run),
the params hash is recomputed from the run's params, the tagged metrics must equal the run's.
A link that is absent or does not agree is reported as broken, with what was found.

Run and version pages are printed as MLflow UI addresses (`<ui>/#/experiments/<id>/runs/<run id>`):
the tracking server's own address when `MLFLOW_TRACKING_URI` points at one, else `nhl ui`'s
default http://127.0.0.1:5000.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from nhl.registry import versions as v
from nhl.tracking.stale import STALE_TAG, mark_stale_runs

LINKS = ("data", "validation", "training run", "metrics", "promotion")
_TOL = 1e-9  # tags hold the exact values; allow for float noise only


@dataclass
class Link:
    """One link of the chain: whether it is present and agrees with the others, and what it says."""

    name: str
    ok: bool
    lines: list[str] = field(default_factory=list)
    problem: str | None = None


@dataclass
class AuditTrail:
    """The chain of one registered version (see the module doc)."""

    name: str
    version: int
    aliases: list[str]
    uri: str
    links: list[Link]

    @property
    def complete(self) -> bool:
        return all(link.ok for link in self.links)

    @property
    def missing(self) -> list[str]:
        return [link.name for link in self.links if not link.ok]

    def render(self) -> str:
        """The trail as text for a terminal."""
        base = v.ui_base(self.uri)
        hint = "" if base != "http://127.0.0.1:5000" else " (start it with `nhl ui`)"
        aliases = ", ".join(self.aliases) or "none"
        lines = [
            f"Audit trail of models:/{self.name}/{self.version} (aliases: {aliases})",
            f"store: {self.uri}",
            f"MLflow UI: {base}{hint}; version page {base}/{v.version_ui_path(self.name, self.version)}",
            "",
        ]
        for number, link in enumerate(self.links, 1):
            lines.append(f"{number}. {link.name:<13}{'ok' if link.ok else 'BROKEN: ' + str(link.problem)}")
            lines += [f"   {line}" for line in link.lines]
        lines.append("")
        if self.complete:
            lines.append("Chain complete: " + " -> ".join(LINKS) + ".")
        else:
            lines.append(f"Chain incomplete: {', '.join(self.missing)}.")
        return "\n".join(lines) + "\n"


def audit_trail(
    name: str | None = None, alias_or_version: str | int = v.CHAMPION, project_root: str | os.PathLike | None = None
) -> AuditTrail:
    """The trail of version `alias_or_version` (an alias or a number) of registered model `name`
    (None: the one nhl registered model that has the alias, or the only one for a number)."""
    client = v.registry_client(project_root)
    ref = str(alias_or_version)
    if name is None:
        if ref.isdigit():
            names = v.nhl_model_names(client)
            if len(names) != 1:
                raise ValueError(
                    f"--version {ref}: name the registered model with --name (nhl models: {', '.join(names) or 'none'})"
                )
            name = names[0]
        else:
            name = v.name_with_alias(client, ref)
    version = v.get_version(client, name, ref)
    run, experiment = _run(client, version.run_id)
    if run is not None and mark_stale_runs(client, [run.info.experiment_id], run.info.run_name):
        run, experiment = _run(client, version.run_id)  # dead trainings of this model: KILLED, tagged why
    data = _data_link(version, run)
    links = [
        data,
        _validation_link(client, version, run),
        _training_link(client, version, run, experiment),
        _metrics_link(version, run),
        _promotion_link(version),
    ]
    return AuditTrail(name, int(version.version), sorted(version.aliases), client.tracking_uri, links)


def _run(client, run_id: str | None):
    from mlflow.exceptions import MlflowException

    if not run_id:
        return None, None
    try:
        run = client.get_run(run_id)
        return run, client.get_experiment(run.info.experiment_id)
    except MlflowException:
        return None, None


def _data_link(version, run) -> Link:
    tags = version.tags
    content, protocol = tags.get(v.TAG_CONTENT_HASH), tags.get(v.TAG_PROTOCOL)
    lines = [
        f"dataset {tags.get(v.TAG_DATASET)}, protocol {protocol}, split seed {tags.get(v.TAG_SEED)}",
        f"manifest content hash {content}",
        f"DVC md5 of data/splits: {tags.get(v.TAG_DVC_MD5) or 'not recorded (registered outside a DVC checkout)'}",
    ]
    if not content or not protocol:
        return Link("data", False, lines, "the version has no data content hash / protocol tags")
    trained_on = run.data.params.get("data.content_hash") if run is not None else None
    if run is not None and trained_on != content:
        return Link("data", False, lines, f"the training run's params say content hash {trained_on}")
    return Link("data", True, lines)


def _validation_link(client, version, run) -> Link:
    tags = version.tags
    vid, success = tags.get(v.TAG_VALIDATION_ID), tags.get(v.TAG_VALIDATION_SUCCESS)
    on_hash, content = tags.get(v.TAG_VALIDATION_HASH), tags.get(v.TAG_CONTENT_HASH)
    verdict = "passed" if success == "true" else "FAILED" if success == "false" else "unknown"
    lines = [
        f"{verdict}, {tags.get(v.TAG_VALIDATION_CHECKS, '?')} checks, on content hash {on_hash}"
        + (" (the data above)" if on_hash and on_hash == content else ""),
        f"result id {vid}",
    ]
    if not vid:
        return Link("validation", False, lines, "the version has no validation result id")
    if success != "true":
        return Link("validation", False, lines, "the validation did not pass")
    if on_hash != content:
        return Link("validation", False, lines, f"it judged data {on_hash}, the model trained on {content}")
    copy = _artifact_json(client, run, v.VALIDATION_ARTIFACT)
    if copy is None:
        return Link("validation", False, lines, f"no copy of the result in the training run ({v.VALIDATION_ARTIFACT})")
    if v.validation_id(copy) != vid:
        return Link("validation", False, lines, f"the copy in the run has id {v.validation_id(copy)}")
    lines.append(f"copy in the training run: {v.VALIDATION_ARTIFACT} (id verified)")
    return Link("validation", True, lines)


def _training_link(client, version, run, experiment) -> Link:
    if run is None:
        return Link("training run", False, [f"run id {version.run_id}"], "the run is not in the store")
    params, tags = run.data.params, run.data.tags
    base = v.ui_base(client.tracking_uri)
    commit = tags.get("mlflow.source.git.commit") or "unknown (not a git checkout)"
    dirty = " (uncommitted changes)" if tags.get("nhl.git_dirty") == "true" else ""
    recomputed = v.params_hash(params)
    tagged = version.tags.get(v.TAG_PARAMS_HASH)
    lines = [
        f"run {run.info.run_id} ({run.info.run_name}), {run.info.status}, experiment "
        f"{experiment.name if experiment else '?'} (id {run.info.experiment_id})",
        f"loss {params.get('loss')}, mode {params.get('mode')}, lengths {params.get('lengths')}, "
        f"epochs {params.get('epochs')}, backbone {params.get('backbone')}",
        f"git {commit}{dirty}; params hash {recomputed}",
        f"UI: {base}/{v.run_ui_path(run.info.experiment_id, run.info.run_id)}",
    ]
    if tags.get(STALE_TAG):
        return Link("training run", False, lines, f"the run is {run.info.status}: {tags[STALE_TAG]}")
    if run.info.status != "FINISHED":
        return Link("training run", False, lines, f"the run's status is {run.info.status}")
    if tagged != recomputed:
        return Link("training run", False, lines, f"the version's params hash is {tagged}")
    return Link("training run", True, lines)


def _metrics_link(version, run) -> Link:
    if run is None:
        return Link("metrics", False, [], "no training run to read metrics from")
    metrics = run.data.metrics
    lengths = v.run_lengths(run.data.params)
    lines = [
        f"query vs database, mAP@{version.tags.get(v.TAG_TOPK, '?')}",
        "| bits | mAP | P@100 | P@r<=2 |",
        "|---:|---:|---:|---:|",
    ]
    missing, disagree = [], []
    for k in lengths:
        cells = [metrics.get(f"{name}_{k}") for name in v.METRIC_NAMES]
        lines.append(f"| {k} | " + " | ".join("-" if c is None else f"{c:.4f}" for c in cells) + " |")
        if cells[0] is None:
            missing.append(k)
        elif f"map_{k}" not in version.tags or abs(float(version.tags[f"map_{k}"]) - cells[0]) > _TOL:
            disagree.append(k)
    if missing:
        return Link("metrics", False, lines, f"no mAP in the run at {missing} bits (was the model evaluated?)")
    if disagree:
        return Link("metrics", False, lines, f"the version's map tags differ from the run at {disagree} bits")
    return Link("metrics", True, lines)


def _promotion_link(version) -> Link:
    tags = version.tags
    decision = tags.get(v.TAG_DECISION)
    lines = [
        f"decision {decision} at {tags.get(v.TAG_TIME)}, tolerance {tags.get(v.TAG_TOLERANCE)}, "
        f"compared with {tags.get(v.TAG_COMPARED)}",
        f"reason: {tags.get(v.TAG_REASON)}",
        f"aliases now: {', '.join(sorted(version.aliases)) or 'none'}; report: promotion/promotion.md in the run",
    ]
    if not decision:
        return Link("promotion", False, lines[-1:], "no promotion decision recorded on the version")
    return Link("promotion", True, lines)


def _artifact_json(client, run, path: str) -> dict | None:
    """A JSON artifact of a run, or None when it is absent or unreadable."""
    import tempfile

    from nhl.envvars import scoped_environ

    if run is None:
        return None
    try:
        with tempfile.TemporaryDirectory() as tmp, scoped_environ({"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}):
            local = client.download_artifacts(run.info.run_id, path, tmp)
            with open(local, encoding="utf-8") as fh:
                return json.load(fh)
    except Exception:  # noqa: BLE001 - absent, unreachable or not JSON: the link is broken either way
        return None
