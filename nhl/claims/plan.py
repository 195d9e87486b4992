"""The claims experiment's plan: which cells (dataset x seed x setting) to run, and their overrides.

A cell is one run of the default DVC pipeline (dvc.yaml) with `dvc exp run -S` overrides: the
dataset's `data.*` keys, the settings shared by every model (epochs, early stopping), the losses'
hyper-parameters, the setting's switches (`train.centers`, `train.faithful`), the seed and the
models to train (`models.losses` x `models.variants`, the matrix of the train/evaluate stages).

    cells = plan_cells(spec, uses_centers=lambda loss: get_loss_class(loss).uses_centers)
    cells[0].set_param_args()   # ['-S', "++data.dataset='mnist5k'", ...]

`spec` is the `experiment` mapping of params/claims.yaml (after a tier's keys replaced its own).

Two optional keys widen the plan (second edition):
- `regimes`: `{name: {overrides: {...}, datasets: [...]}}`, e.g. smallcnn from scratch and frozen
  pretrained features. Every cell is planned once per regime (its `datasets`, default all). The
  first regime is the reference: its cells keep the ids of a plan without regimes
  (`<dataset>-s<seed>-<setting>`), the others' read `<dataset>-<regime>-s<seed>-<setting>`, so
  adding a regime leaves the existing cells' names alone.
- `sweeps`: `{name: {key, values, reference, losses, variants, compare, overrides, reference_settings}}`,
  one hyper-parameter of A or D (`train.beta`, `train.distill_weight`) varied on some losses'
  nested models. Each value other than `reference` (the value the settings already train with)
  is one more setting, `<name>_<value>` (`beta_0p5`); the reference value reuses the models of
  `reference_settings` (the first that trains the loss), so it costs nothing.
Every override is written `++key=value` (Hydra's "set or add"), so keys absent from params.yaml
(a loss's section) are added; dict values are split into their leaves so that no section is
merged in a surprising way.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nhl.variants import NESTED_VARIANTS

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_]*$")
_WORD = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_KEYWORDS = ("null", "true", "false", "inf", "nan")
_RESERVED = ("models.",)  # the plan sets models.losses / models.variants itself
REMOVE = "<remove>"  # an override value meaning "delete this key" (`-S ~key`), e.g. smallcnn's width option


def hydra_value(value: Any) -> str:
    """`value` in Hydra's override grammar (what `dvc exp run -S key=<value>` parses).

    Strings are single-quoted unless they are plain words (`csq`, `nhl-full`) that Hydra cannot
    read as anything else, so "1e5", "null" or "true" stay strings.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"override value {value!r}: expected a finite number")
        return repr(value)
    if isinstance(value, str):
        if "'" in value or "\\" in value:
            raise ValueError(f"override value {value!r}: quotes and backslashes are not supported")
        if _WORD.match(value) and value.lower() not in _KEYWORDS:
            return value
        return f"'{value}'"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{_check_name(str(k), 'override key')}:{hydra_value(v)}" for k, v in value.items()) + "}"
    raise ValueError(f"override value {value!r}: expected null, a bool, number, string, list or mapping")


def _check_name(name: str, what: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"{what} {name!r}: expected letters, digits and underscores")
    return name


def flatten(prefix: str, value: Any) -> dict[str, Any]:
    """`{"a.b": 1, "a.c": {}}` from `("a", {"b": 1, "c": {}})`: mappings split into their leaves."""
    if isinstance(value, Mapping) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(f"{prefix}.{_check_name(str(key), 'parameter name')}", item))
        return out
    return {prefix: dict(value) if isinstance(value, Mapping) else value}


@dataclass(frozen=True)
class Cell:
    """One DVC experiment of the claims plan."""

    dataset: str
    seed: int
    setting: str
    losses: tuple[str, ...]
    variants: tuple[str, ...]
    overrides: dict[str, Any] = field(hash=False)
    regime: str | None = None  # None: a plan without regimes, or its first (reference) regime

    @property
    def section(self) -> str:
        """The report's section: `<dataset>`, or `<dataset>-<regime>` outside the reference regime."""
        return self.dataset if self.regime is None else f"{self.dataset}-{self.regime}"

    @property
    def cell_id(self) -> str:
        """`<section>-s<seed>-<setting>`: the folder under the runs directory."""
        return f"{self.section}-s{self.seed}-{self.setting}"

    @property
    def digest(self) -> str:
        """First 8 hex digits of the SHA-256 of the overrides: a changed plan gives a new name."""
        text = json.dumps(self.overrides, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:8]

    def experiment_name(self, prefix: str = "claims") -> str:
        """The DVC experiment's name, e.g. `claims-mnist5k-s0-default-1a2b3c4d`."""
        return f"{prefix}-{self.cell_id}-{self.digest}"

    @property
    def model_ids(self) -> list[str]:
        return [f"{loss}-{variant}" for loss in self.losses for variant in self.variants]

    def set_param_args(self) -> list[str]:
        """`["-S", "++key=value", ...]` for `dvc exp run`."""
        args: list[str] = []
        for key, value in self.overrides.items():
            args += ["-S", f"~{key}" if value == REMOVE else f"++{key}={hydra_value(value)}"]
        return args


def _mapping(value: Any, where: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: expected a mapping, got {value!r}")
    return value


def _names(value: Any, where: str, item: Callable[[Any], bool] = lambda v: isinstance(v, str) and bool(v)) -> list:
    if not isinstance(value, list) or not value or not all(item(v) for v in value):
        raise ValueError(f"{where}: expected a non-empty list, got {value!r}")
    if len(set(map(str, value))) != len(value):
        raise ValueError(f"{where}: repeated entries in {value!r}")
    return list(value)


def _overrides(value: Any, where: str) -> dict[str, Any]:
    """A mapping of dotted params.yaml keys to values, flattened to leaves."""
    out: dict[str, Any] = {}
    for key, item in _mapping(value or {}, where).items():
        if not isinstance(key, str) or not _KEY.match(key):
            raise ValueError(f"{where}: {key!r} is not a dotted params.yaml key such as train.epochs")
        if key.startswith(_RESERVED):
            raise ValueError(f"{where}: {key} is set by the plan (losses and variants of each setting)")
        out.update(flatten(key, item))
    for item in out.values():
        hydra_value(item)  # a value the override grammar cannot say fails here
    return out


def _check_variant(name: str, where: str) -> None:
    rest = name.removeprefix("baseline-")
    if name not in NESTED_VARIANTS and not (name.startswith("baseline-") and rest.isdigit() and int(rest) > 0):
        raise ValueError(
            f"{where}: unknown variant {name!r}; expected baseline-<k> or one of {', '.join(NESTED_VARIANTS)}"
        )


@dataclass(frozen=True)
class Sweep:
    """One hyper-parameter of the nested models varied over `values` (params/claims.yaml `sweeps`).

    Judged per value as `compare[0] − compare[1]` (e.g. nhl-A − nhl-noA-noD), paired by seed and
    length; `compare[1]` and the reference value's models come from the first of
    `reference_settings` that trains the loss.
    """

    name: str
    key: str
    values: tuple[float, ...]
    reference: float
    losses: tuple[str, ...]
    variants: tuple[str, ...]
    compare: tuple[str, str]
    overrides: dict[str, Any] = field(hash=False)
    reference_settings: tuple[str, ...] = ()

    def setting(self, value: float) -> str | None:
        """The setting that trains `value` (`beta_0p5`); None for the reference value (no new cell)."""
        if value == self.reference:
            return None
        return f"{self.name}_" + f"{value:g}".replace(".", "p").replace("-", "m").replace("+", "")

    def settings(self) -> dict[float, str | None]:
        return {value: self.setting(value) for value in self.values}


@dataclass(frozen=True)
class Plan:
    """The parsed plan: its cells, regimes (name -> datasets), sweeps and each setting's switches."""

    cells: list[Cell]
    regimes: dict[str, dict[str, Any]]  # name -> its overrides (REMOVE: a deleted key)
    reference_regime: str | None
    sweeps: list[Sweep]
    settings: dict[str, dict[str, Any]]

    def sections(self) -> dict[str, dict[str, Any]]:
        """`{section: {"dataset", "regime", "overrides"}}` of every cell, in plan order (the report's
        sections; regime and overrides None in a plan without regimes)."""
        out: dict[str, dict[str, Any]] = {}
        for cell in self.cells:
            regime = cell.regime if cell.regime is not None else self.reference_regime
            overrides = self.regimes.get(regime) if regime is not None else None
            out.setdefault(cell.section, {"dataset": cell.dataset, "regime": regime, "overrides": overrides})
        return out


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where}: expected a finite number, got {value!r}")
    return value


def _regimes(spec: Mapping[str, Any], datasets: list[str]) -> list[tuple[str | None, dict[str, Any], list[str]]]:
    """(regime in cell ids or None for the reference regime, overrides, datasets) of each regime."""
    raw = spec.get("regimes")
    if raw is None:
        return [(None, {}, datasets)]
    regimes = _mapping(raw, "experiment.regimes")
    if not regimes:
        raise ValueError("experiment.regimes: expected at least one regime (or leave the key out)")
    out = []
    for i, (name, body) in enumerate(regimes.items()):
        where = f"experiment.regimes.{name}"
        _check_name(str(name), where)
        body = _mapping(body or {}, where)
        unknown = sorted(set(body) - {"overrides", "remove", "datasets"})
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; expected overrides, remove, datasets")
        removed = [] if body.get("remove") is None else _names(body["remove"], f"{where}.remove")
        for key in removed:
            if not _KEY.match(key) or key.startswith(_RESERVED):
                raise ValueError(f"{where}.remove: {key!r} is not a dotted params.yaml key the plan may delete")
        chosen = _names(body.get("datasets", datasets), f"{where}.datasets")
        missing = [d for d in chosen if d not in datasets]
        if missing:
            raise ValueError(f"{where}.datasets: {', '.join(map(str, missing))} not in experiment.datasets")
        overrides = {**dict.fromkeys(removed, REMOVE), **_overrides(body.get("overrides"), f"{where}.overrides")}
        out.append((None if i == 0 else str(name), overrides, chosen))
    return out


_SWEEP_KEYS = ("key", "values", "reference", "losses", "variants", "compare", "overrides", "reference_settings")


def _sweep(name: str, body: Any, losses: list[str], settings: list[str]) -> Sweep:
    where = f"experiment.sweeps.{name}"
    _check_name(name, where)
    body = _mapping(body, where)
    unknown = sorted(set(body) - set(_SWEEP_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; expected {', '.join(_SWEEP_KEYS)}")
    key = body.get("key")
    if not isinstance(key, str) or not _KEY.match(key) or key.startswith(_RESERVED):
        raise ValueError(f"{where}.key: expected a dotted params.yaml key such as train.beta, got {key!r}")
    values = tuple(_number(v, f"{where}.values") for v in _names(body.get("values"), f"{where}.values", lambda v: True))
    reference = _number(body.get("reference"), f"{where}.reference")
    if reference not in values:
        raise ValueError(f"{where}.reference: {reference!r} is not one of values {list(values)}")
    variants = _names(body.get("variants"), f"{where}.variants")
    for variant in variants:
        if variant not in NESTED_VARIANTS:
            raise ValueError(f"{where}.variants: {variant!r} is not a nested variant ({', '.join(NESTED_VARIANTS)})")
    compare = body.get("compare", [variants[0], "nhl-noA-noD"])
    if not isinstance(compare, list) or len(compare) != 2 or compare[0] not in variants:
        raise ValueError(f"{where}.compare: expected [a variant of the sweep, the variant it is judged against]")
    _check_variant(str(compare[1]), f"{where}.compare")
    refs = _names(body.get("reference_settings"), f"{where}.reference_settings")
    missing = [s for s in refs if s not in settings]
    if missing:
        raise ValueError(f"{where}.reference_settings: {', '.join(map(str, missing))} not in experiment.settings")
    wanted = _names(body.get("losses"), f"{where}.losses")
    return Sweep(
        name,
        key,
        values,
        reference,
        tuple(loss for loss in wanted if loss in losses),  # a tier with fewer losses keeps those it has
        tuple(variants),
        (str(compare[0]), str(compare[1])),
        _overrides(body.get("overrides"), f"{where}.overrides"),
        tuple(refs),
    )


def parse_plan(spec: Mapping[str, Any], uses_centers: Callable[[str], bool]) -> Plan:
    """The whole plan: every cell (datasets outermost, then regimes, seeds, settings in file order,
    then the sweeps' settings), the regimes, the sweeps and each setting's overrides.

    `uses_centers(loss)` says whether a loss has hash centres (settings with
    `centre_losses_only: true` keep only those). A setting or sweep left with no loss is skipped.
    """
    spec = _mapping(spec, "experiment")
    datasets = _mapping(spec.get("datasets"), "experiment.datasets")
    if not datasets:
        raise ValueError("experiment.datasets: expected at least one dataset")
    seeds = _names(spec.get("seeds"), "experiment.seeds", lambda v: isinstance(v, int) and not isinstance(v, bool))
    seed_keys = _names(
        spec.get("seed_keys", ["train.seed"]),
        "experiment.seed_keys",
        lambda v: isinstance(v, str) and bool(_KEY.match(v)),
    )
    losses = _names(spec.get("losses"), "experiment.losses")
    loss_params = _mapping(spec.get("loss_params") or {}, "experiment.loss_params")
    missing = [loss for loss in losses if loss not in loss_params]
    if missing:
        raise ValueError(
            f"experiment.loss_params: no entry for {', '.join(missing)} "
            "(give each loss its hyper-parameters, {} for the loss's defaults)"
        )
    common = _overrides(spec.get("common"), "experiment.common")
    settings = _mapping(spec.get("settings"), "experiment.settings")
    if not settings:
        raise ValueError("experiment.settings: expected at least one setting")
    parsed = []
    for name, body in settings.items():
        where = f"experiment.settings.{name}"
        _check_name(str(name), where)
        body = _mapping(body, where)
        unknown = sorted(set(body) - {"overrides", "variants", "centre_losses_only"})
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; expected overrides, variants, centre_losses_only")
        variants = _names(body.get("variants"), f"{where}.variants")
        for variant in variants:
            _check_variant(variant, f"{where}.variants")
        only_centres = body.get("centre_losses_only", False)
        if not isinstance(only_centres, bool):
            raise ValueError(f"{where}.centre_losses_only: expected true or false, got {only_centres!r}")
        kept = [loss for loss in losses if uses_centers(loss)] if only_centres else losses
        parsed.append((str(name), _overrides(body.get("overrides"), f"{where}.overrides"), variants, kept))
    sweeps = [
        _sweep(str(name), body, losses, [p[0] for p in parsed])
        for name, body in _mapping(spec.get("sweeps") or {}, "experiment.sweeps").items()
    ]
    for sweep in sweeps:
        for value, name in sweep.settings().items():
            if name is None or not sweep.losses:
                continue
            if name in {p[0] for p in parsed}:
                raise ValueError(f"experiment.sweeps.{sweep.name}: its setting {name} is also in experiment.settings")
            parsed.append((name, {**sweep.overrides, sweep.key: value}, list(sweep.variants), list(sweep.losses)))
    regimes = _regimes(spec, [str(d) for d in datasets])
    cells = []
    for dataset, data_overrides in datasets.items():
        _check_name(str(dataset), "experiment.datasets")
        data = _overrides(data_overrides, f"experiment.datasets.{dataset}")
        for regime, regime_overrides, regime_datasets in regimes:
            if str(dataset) not in regime_datasets:
                continue
            for seed in seeds:
                for name, overrides, variants, kept in parsed:
                    if not kept:
                        continue
                    values: dict[str, Any] = {**data, **common, **regime_overrides}
                    for loss in kept:
                        values.update(
                            flatten(
                                f"losses.{loss}", _mapping(loss_params[loss] or {}, f"experiment.loss_params.{loss}")
                            )
                        )
                    values.update(overrides)
                    values.update(dict.fromkeys(seed_keys, seed))
                    values.update({"models.losses": list(kept), "models.variants": list(variants)})
                    cells.append(Cell(str(dataset), seed, name, tuple(kept), tuple(variants), values, regime))
    names = list(_mapping(spec.get("regimes") or {}, "experiment.regimes"))
    return Plan(
        cells,
        {str(n): dict(r[1]) for n, r in zip(names, regimes, strict=False)} if names else {},
        str(names[0]) if names else None,
        [s for s in sweeps if s.losses],
        {name: overrides for name, overrides, _, kept in parsed if kept},
    )


def plan_cells(spec: Mapping[str, Any], uses_centers: Callable[[str], bool]) -> list[Cell]:
    """Every cell of the plan (see `parse_plan`)."""
    return parse_plan(spec, uses_centers).cells


def merge_tier(experiment: Mapping[str, Any], tiers: Mapping[str, Any] | None, tier: str | None) -> dict[str, Any]:
    """`experiment` with the named tier's keys replacing its own (a shallow replace, key by key)."""
    merged = dict(_mapping(experiment, "experiment"))
    if tier is None:
        return merged
    tiers = _mapping(tiers or {}, "tiers")
    if tier not in tiers:
        raise ValueError(f"tier {tier!r}: not defined; expected one of {', '.join(tiers) or '(none defined)'}")
    body = _mapping(tiers[tier], f"tiers.{tier}")
    unknown = sorted(set(body) - set(merged) - {"seed_keys", "loss_params", "common", "regimes", "sweeps"})
    if unknown:
        raise ValueError(f"tiers.{tier}: unknown key(s) {unknown}; expected keys of `experiment`")
    merged.update(body)
    return merged
