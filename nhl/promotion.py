"""The promotion gate: register a trained model as a new version, then decide `champion` or `challenger`.

`register_and_promote(model file, name, validation result, metrics)`:

1. Nothing is registered unless the validation gate passed **on the data the model trained
   on** (the result's content hash equals the run's `data.content_hash`).
2. The run's logged model becomes a new version of `name` with provenance tags
   (`nhl.registry.versions`); a run already registered is not registered twice (a rerun of
   the flow whose training DVC skipped reuses the version and its recorded decision).
3. The first version becomes `champion`. Later ones become `champion` only if their mAP at
   every code length the champion serves is no worse than the champion's by more than
   `tolerance` (and their validation passed); otherwise `challenger`, with the reason.
   A version lacking one of the champion's lengths is not promoted.
4. Same split or nothing: mAP is compared only on the same query/database split (same manifest
   content hash) and the same mAP@topk. When the champion was evaluated on another split (new
   data), it is **re-evaluated** on this version's split: loaded from the registry and scored on
   `manifest`'s query vs database, which must be this version's split (its content hash is
   checked). Without such a manifest, or if the champion cannot run on it, the comparison is
   refused: the version becomes `challenger` and the reason says why. We re-evaluate rather
   than refuse outright because retraining on new data is the flow's purpose; refusing would
   freeze the champion after every data change.
5. The decision is tagged on the version and on its training run, and the decision (JSON) and
   its report (markdown) are logged to the run under `promotion/`. `write_report` writes
   `reports/promotion.md` atomically.

The store is `nhl.tracking`'s: sqlite at the project root by default, or the tracking server
named by `MLFLOW_TRACKING_URI` (same code). Concurrent promotions of one registered model are
not serialised: run one gate at a time per model (the flow does).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nhl import atomic
from nhl.registry import versions as v

DEFAULT_TOLERANCE = 0.01
REPORT_ARTIFACT_DIR = "promotion"
_EPS = 1e-9  # float slack when a difference equals the tolerance exactly


@dataclass
class LengthRow:
    """One code length of the comparison: mAP of the new version and of the champion."""

    bits: int
    new_map: float | None
    champion_map: float | None
    ok: bool

    @property
    def delta(self) -> float | None:
        if self.new_map is None or self.champion_map is None:
            return None
        return self.new_map - self.champion_map


@dataclass
class PromotionDecision:
    """What the gate did with one trained model, and why (JSON-ready via `to_dict`)."""

    name: str
    model_id: str | None
    run_id: str | None
    registered: bool
    promoted: bool
    alias: str | None
    reason: str
    tolerance: float
    version: int | None = None
    champion_before: int | None = None
    comparison: str = ""
    rows: list[LengthRow] = field(default_factory=list)
    validation_id: str | None = None
    content_hash: str | None = None
    time: str = ""
    reused: bool = False

    def summary(self) -> str:
        """One line for logs and the flow's report."""
        if not self.registered:
            return f"{self.name}: {self.model_id}: not registered: {self.reason}"
        what = "champion" if self.promoted else f"{self.alias} (not promoted)"
        return f"{self.name}: version {self.version} ({self.model_id}) -> {what}: {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["rows"] = [dict(asdict(row), delta=row.delta) for row in self.rows]
        return record


def compare_maps(
    new: Mapping[int, float], champion: Mapping[int, float], tolerance: float
) -> tuple[list[LengthRow], list[str]]:
    """Rows for every length of either model, and the failures (empty: the new one may be promoted).

    A length the champion serves must exist in the new model with mAP >= champion - tolerance;
    lengths only the new model has are listed and pass.
    """
    if tolerance < 0:
        raise ValueError(f"registry.tolerance: expected a number >= 0, got {tolerance}")
    rows, failures = [], []
    for k in sorted(set(new) | set(champion)):
        mine, theirs = new.get(k), champion.get(k)
        if theirs is None:
            rows.append(LengthRow(k, mine, None, True))
        elif mine is None:
            rows.append(LengthRow(k, None, theirs, False))
            failures.append(f"no {k}-bit code, which the champion serves")
        else:
            ok = mine >= theirs - tolerance - _EPS
            rows.append(LengthRow(k, mine, theirs, ok))
            if not ok:
                failures.append(f"mAP at {k} bits {mine:.4f} is {theirs - mine:.4f} below the champion's {theirs:.4f}")
    return rows, failures


def register_and_promote(
    model: str | os.PathLike,
    name: str,
    validation: Mapping[str, Any] | str | os.PathLike,
    metrics: Mapping[str, Any] | str | os.PathLike | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    manifest: str | os.PathLike | None = None,
    dvc_md5: str | None = None,
    project_root: str | os.PathLike | None = None,
) -> PromotionDecision:
    """Register the model file's training run as a version of `name` and run the gate (module doc).

    `validation` is the validation gate's result (`reports/validation/result.json` or its
    content); `metrics` the evaluate stage's record (`metrics/<model_id>.json`: `bits`, `topk`),
    or None to read `map_<k>` from the training run (mAP over the whole database assumed);
    `manifest` the split directory, used only to re-evaluate a champion of another split;
    `dvc_md5` the DVC hash of that split, recorded when known.
    """
    from nhl.models.hasher import load_hasher

    now = datetime.now(UTC).isoformat(timespec="seconds")
    result = _json_input(validation, "validation result")
    _, extra = load_hasher(model)
    model_id, run_id = extra.get("model_id") or Path(model).stem, extra.get("mlflow_run_id")
    base: dict[str, Any] = dict(
        name=name,
        model_id=model_id,
        run_id=run_id,
        tolerance=float(tolerance),
        time=now,
        validation_id=v.validation_id(result),
        content_hash=result.get("content_hash"),
    )
    if tolerance < 0:
        raise ValueError(f"registry.tolerance: expected a number >= 0, got {tolerance}")
    if not result.get("success"):
        failed = ", ".join(str(c) for c in result.get("failed", [])) or "see its checks"
        return PromotionDecision(
            registered=False,
            promoted=False,
            alias=None,
            reason=f"data validation failed ({failed}): nothing registered",
            **base,
        )
    if not run_id:
        raise ValueError(f"model file {model}: no MLflow run id (trained with --no-track?): nothing to register")

    client = v.registry_client(project_root)
    run = _get_run(client, run_id, model)
    trained_on = run.data.params.get("data.content_hash")
    if trained_on != result.get("content_hash"):
        return PromotionDecision(
            registered=False,
            promoted=False,
            alias=None,
            reason=(
                f"the validation result judged data {result.get('content_hash')} but the model trained on "
                f"{trained_on}: validate that split first; nothing registered"
            ),
            **base,
        )
    bits, topk = _new_metrics(metrics, run)
    new_maps = {int(k): float(values["map"]) for k, values in bits.items()}

    existing = v.find_version(client, name, run_id)
    if existing is not None and existing.tags.get(v.TAG_DECISION):
        return _recorded(existing, base)
    version = existing or v.register_version(client, name, run, v.version_tags(run, bits, result, topk, dvc_md5))
    if existing is None:
        client.log_text(run_id, json.dumps(result, indent=2, default=str) + "\n", v.VALIDATION_ARTIFACT)

    decision = _decide(client, name, version, new_maps, topk, float(tolerance), manifest, base, project_root)
    _record(client, version, decision)
    return decision


def _decide(
    client,
    name: str,
    version,
    new_maps: dict[int, float],
    topk: int | None,
    tolerance: float,
    manifest,
    base: dict,
    project_root=None,
) -> PromotionDecision:
    """Compare with the current champion and move the aliases; see the module doc."""
    champion = v.alias_version(client, name, v.CHAMPION)
    number = int(version.version)

    def decide(promoted: bool, reason: str, **more: Any) -> PromotionDecision:
        alias = v.CHAMPION if promoted else v.CHALLENGER
        client.set_registered_model_alias(name, alias, str(number))
        return PromotionDecision(
            registered=True,
            promoted=promoted,
            alias=alias,
            reason=reason,
            version=number,
            champion_before=int(champion.version) if champion is not None else None,
            **more,
            **base,
        )

    if version.tags.get(v.TAG_VALIDATION_SUCCESS) != "true":
        return decide(False, "its data validation did not pass")
    if champion is None:
        rows = [LengthRow(k, m, None, True) for k, m in sorted(new_maps.items())]
        return decide(True, f"first version of {name}: no champion yet", comparison="no champion", rows=rows)
    if int(champion.version) == number:
        return decide(True, "already the champion", comparison="itself")
    try:
        champion_maps, how = _champion_maps(champion, version, topk, manifest, name, project_root)
    except _NotComparable as err:
        return decide(False, f"not comparable with champion version {champion.version}: {err}", comparison="refused")
    rows, failures = compare_maps(new_maps, champion_maps, tolerance)
    if failures:
        return decide(False, "; ".join(failures) + f" (tolerance {tolerance:g})", comparison=how, rows=rows)
    return decide(
        True,
        f"no worse than champion version {champion.version} by more than {tolerance:g} mAP at any of its lengths",
        comparison=how,
        rows=rows,
    )


class _NotComparable(Exception):
    """The champion's mAP cannot be had on this version's split."""


def _champion_maps(
    champion, version, topk: int | None, manifest, name: str, project_root=None
) -> tuple[dict[int, float], str]:
    """The champion's mAP per length on this version's split: from its tags when it was evaluated
    on the same split with the same topk, else by re-evaluating it on `manifest`."""
    mine, theirs = version.tags.get(v.TAG_CONTENT_HASH), champion.tags.get(v.TAG_CONTENT_HASH)
    my_topk, their_topk = version.tags.get(v.TAG_TOPK), champion.tags.get(v.TAG_TOPK)
    tagged = v.version_maps(champion)
    if mine == theirs and my_topk == their_topk and tagged:
        return tagged, f"same split ({mine}), mAP@{my_topk}"
    why = (
        f"the champion was evaluated on split {theirs}, this version on {mine}"
        if mine != theirs
        else f"the champion's mAP is @{their_topk}, this version's @{my_topk}"
        if my_topk != their_topk
        else "the champion has no mAP tags"
    )
    if manifest is None:
        raise _NotComparable(f"{why}, and no manifest was given to re-evaluate the champion on")
    from nhl.data.manifest import read_manifest

    _, meta = read_manifest(manifest)
    if meta.get("content_hash") != mine:
        raise _NotComparable(f"{why}, and manifest {manifest} is split {meta.get('content_hash')}, not this version's")
    try:
        maps = _evaluate_version(name, champion.version, manifest, topk, project_root)
    except (ValueError, RuntimeError) as err:
        raise _NotComparable(f"{why}; re-evaluating the champion on {manifest} failed ({err})") from None
    return maps, f"champion re-evaluated on this version's split ({mine}), mAP@{my_topk}; {why}"


def _evaluate_version(name: str, version: str | int, manifest, topk: int | None, project_root=None) -> dict[int, float]:
    """mAP per length of a registered version on a manifest's query vs database."""
    from nhl.data.dataset import load_split
    from nhl.evaluation import evaluate_model
    from nhl.registry.serving import load_model_version

    model, _ = load_model_version(name, version, project_root=project_root)
    query, database = load_split(manifest, "query"), load_split(manifest, "database")
    if query[0][0].shape[0] != model.spec.in_channels:
        raise ValueError(
            f"the champion expects {model.spec.in_channels}-channel images, the manifest has {query[0][0].shape[0]}"
        )
    bits, _ = evaluate_model(model, query, database, topk=topk, pr_lengths=())
    return {int(k): float(values["map"]) for k, values in bits.items()}


def _record(client, version, decision: PromotionDecision) -> None:
    """Tag the decision on the version and its run; log decision.json and promotion.md to the run."""
    compared = f"version {decision.champion_before}" if decision.champion_before is not None else "none"
    tags = {
        v.TAG_DECISION: decision.alias,
        v.TAG_REASON: decision.reason[:4900],
        v.TAG_COMPARED: compared,
        v.TAG_TIME: decision.time,
        v.TAG_TOLERANCE: f"{decision.tolerance:g}",
    }
    for key, value in tags.items():
        client.set_model_version_tag(decision.name, str(version.version), key, str(value))
    client.set_tag(version.run_id, "nhl.registered_model", f"models:/{decision.name}/{version.version}")
    client.set_tag(version.run_id, v.TAG_DECISION, str(decision.alias))
    client.log_text(
        version.run_id, json.dumps(decision.to_dict(), indent=2) + "\n", f"{REPORT_ARTIFACT_DIR}/decision.json"
    )
    client.log_text(
        version.run_id, render_report([decision], client.tracking_uri), f"{REPORT_ARTIFACT_DIR}/promotion.md"
    )


def _recorded(version, base: dict) -> PromotionDecision:
    """The decision already taken for a version (a rerun of the flow on an unchanged model)."""
    tags = version.tags
    alias = tags.get(v.TAG_DECISION)
    compared = tags.get(v.TAG_COMPARED, "")
    return PromotionDecision(
        registered=True,
        promoted=v.CHAMPION in version.aliases,
        alias=alias,
        version=int(version.version),
        reason=(
            f"run already registered as version {version.version}; decided {alias} at {tags.get(v.TAG_TIME)} "
            f"({tags.get(v.TAG_REASON)}); aliases now: {', '.join(sorted(version.aliases)) or 'none'}"
        ),
        champion_before=int(compared.split()[-1]) if compared.startswith("version ") else None,
        comparison="recorded earlier",
        reused=True,
        **base,
    )


def _get_run(client, run_id: str, model):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException:
        raise ValueError(
            f"model file {model}: its MLflow run {run_id} is not in {client.tracking_uri} "
            f"(another store? set MLFLOW_TRACKING_URI)"
        ) from None


def _new_metrics(metrics, run) -> tuple[dict[str, dict[str, float]], int | None]:
    """(per-length metrics, topk) of the new model: from the evaluate stage's record, else its run."""
    lengths = v.run_lengths(run.data.params)
    if metrics is None:
        found = run.data.metrics
        missing = [k for k in lengths if f"map_{k}" not in found]
        if missing:
            raise ValueError(f"MLflow run {run.info.run_id}: no map metric at {missing} bits: evaluate the model first")
        bits = {
            str(k): {name: found[f"{name}_{k}"] for name in v.METRIC_NAMES if f"{name}_{k}" in found} for k in lengths
        }
        return bits, None
    record = _json_input(metrics, "metrics record")
    if record.get("mlflow_run_id") not in (None, run.info.run_id):
        raise ValueError(
            f"metrics record of run {record.get('mlflow_run_id')} does not belong to the model's run "
            f"{run.info.run_id}: evaluate this model file first"
        )
    recorded = record.get("bits")
    if not isinstance(recorded, Mapping) or any("map" not in (recorded.get(str(k)) or {}) for k in lengths):
        raise ValueError(f"metrics record: expected `bits` with a `map` for each of the lengths {lengths}")
    return {str(k): dict(recorded[str(k)]) for k in lengths}, record.get("topk")


def _json_input(value, what: str) -> dict[str, Any]:
    """A mapping given directly or as a JSON file."""
    if isinstance(value, Mapping):
        return dict(value)
    path = Path(value)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        loaded = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{what} {path}: not valid JSON ({err})") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"{what} {path}: expected a JSON object")
    return loaded


# -- the report ---------------------------------------------------------------------------------------
def render_report(decisions: list[PromotionDecision], uri: str | None = None) -> str:
    """`reports/promotion.md`: per registered model, the decision, its reason and the mAP table."""
    lines = ["# Model promotion", ""]
    if decisions:
        lines.append(
            f"Decided {decisions[0].time}; tolerance {decisions[0].tolerance:g} mAP per code length"
            + (f"; store `{uri}`" if uri else "")
            + "."
        )
        lines.append("")
    for d in decisions:
        if not d.registered:
            verdict = "not registered"
        elif d.promoted:
            verdict = f"version {d.version} is **champion**"
        else:
            verdict = f"version {d.version} is **{d.alias}** (not promoted)"
        lines += [
            f"## {d.name}: {verdict}",
            "",
            f"- model: `{d.model_id}`, MLflow run `{d.run_id}`",
            f"- reason: {d.reason}",
            f"- data: content hash `{d.content_hash}`; validation result `{d.validation_id}`",
        ]
        if d.registered:
            before = f"version {d.champion_before}" if d.champion_before is not None else "none"
            lines.append(f"- champion before: {before}; comparison: {d.comparison}")
        if d.rows:
            lines += [
                "",
                "| bits | this version mAP | champion mAP | difference | within tolerance |",
                "|---:|---:|---:|---:|:---:|",
            ]
            for row in d.rows:
                lines.append(
                    f"| {row.bits} | {_num(row.new_map)} | {_num(row.champion_map)} | "
                    f"{_num(row.delta, signed=True)} | {'yes' if row.ok else '**no**'} |"
                )
        lines.append("")
    if not decisions:
        lines.append("No model was considered.")
    return "\n".join(lines).rstrip("\n") + "\n"


def write_report(path: str | os.PathLike, decisions: list[PromotionDecision], uri: str | None = None) -> None:
    """Write the report atomically."""
    atomic.write_text(path, render_report(decisions, uri))


def _num(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


# -- what to promote, from the pipeline's settings -----------------------------------------------------
@dataclass
class Candidate:
    """One model the pipeline trained that the gate should consider."""

    name: str
    model: Path
    metrics: Path | None
    dvc_md5: str | None = None


def candidates_from_params(
    data: Mapping[str, Any],
    models: Mapping[str, Any],
    registry: Mapping[str, Any],
    root: str | os.PathLike = ".",
    losses: list[str] | None = None,
    model_dir: str = "models",
    metrics_dir: str = "metrics",
) -> list[Candidate]:
    """The models to promote: for each loss of `models.losses` (or `losses`), the `registry.variant`
    model (`models/<loss>/<loss>-<variant>.pt`, `metrics/<loss>/<loss>-<variant>.json`) under the name
    `registry.name` formats (fields dataset, loss, variant, protocol). The sections are params.yaml's
    `data`, `models` and `registry`, passed in by the caller."""
    from nhl.layout import metrics_file, model_file
    from nhl.variants import model_id

    root = Path(root)
    template, variant = registry.get("name"), registry.get("variant")
    if not isinstance(template, str) or not template:
        raise ValueError("registry.name: expected a template such as 'nhl-{dataset}-{loss}'")
    if not isinstance(variant, str) or not variant:
        raise ValueError("registry.variant: expected the variant to register, e.g. nhl-full")
    known = list(models.get("losses") or [])
    chosen = list(losses) if losses else known
    unknown = [loss for loss in chosen if loss not in known]
    if unknown:
        raise ValueError(f"--loss: {unknown} not in models.losses {known}")
    found = []
    for loss in chosen:
        mid = model_id(loss, variant)
        name = model_name(
            template, dataset=data.get("dataset"), loss=loss, variant=variant, protocol=data.get("protocol")
        )
        found.append(
            Candidate(
                name,
                model_file(root / model_dir, mid),
                metrics_file(root / metrics_dir, mid),
                dvc_split_md5(root / "dvc.lock", mid),
            )
        )
    return found


def model_name(template: str, **fields: Any) -> str:
    """See `nhl.registry.versions.model_name`."""
    return v.model_name(template, **fields)


def dvc_split_md5(lock: str | os.PathLike, model_id: str, split_dir: str = "data/splits") -> str | None:
    """The DVC md5 of the split the model was trained on, from dvc.lock (`models@<loss>`'s, or
    `train@<model_id>`'s in projects from before the per-loss stage: its dependency), or None when
    there is no lock or no such entry."""
    import yaml

    from nhl.layout import loss_of

    lock = Path(lock)
    if not lock.is_file():
        return None
    try:
        stages = (yaml.safe_load(lock.read_text()) or {}).get("stages") or {}
    except yaml.YAMLError:
        return None
    for stage in (f"models@{loss_of(model_id)}", f"train@{model_id}", "split"):
        entry = stages.get(stage) or {}
        for item in (entry.get("deps") or []) + (entry.get("outs") or []):
            if item.get("path") == split_dir and item.get("md5"):
                return str(item["md5"])
    return None


def promote_candidates(
    candidates: list[Candidate],
    validation: Mapping[str, Any] | str | os.PathLike,
    tolerance: float = DEFAULT_TOLERANCE,
    manifest: str | os.PathLike | None = None,
    report: str | os.PathLike | None = None,
    project_root: str | os.PathLike | None = None,
) -> list[PromotionDecision]:
    """Run the gate on each candidate in order; write the report (atomically) when `report` is set."""
    result = _json_input(validation, "validation result")
    decisions = []
    for c in candidates:
        metrics = c.metrics if c.metrics is not None and c.metrics.is_file() else None
        if c.metrics is not None and metrics is None:
            raise FileNotFoundError(f"metrics file {c.metrics} does not exist: evaluate the model first")
        decisions.append(
            register_and_promote(c.model, c.name, result, metrics, tolerance, manifest, c.dvc_md5, project_root)
        )
    if report is not None:
        from nhl.tracking import tracking_uri

        write_report(report, decisions, tracking_uri(project_root))
    return decisions
