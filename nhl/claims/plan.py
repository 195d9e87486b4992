"""The claims experiment's plan: which cells (dataset x seed x setting) to run, and their overrides.

A cell is one run of the default DVC pipeline (dvc.yaml) with `dvc exp run -S` overrides: the
dataset's `data.*` keys, the settings shared by every model (epochs, early stopping), the losses'
hyper-parameters, the setting's switches (`train.centers`, `train.faithful`), the seed and the
models to train (`models.losses` x `models.variants`, the matrix of the train/evaluate stages).

    cells = plan_cells(spec, uses_centers=lambda loss: get_loss_class(loss).uses_centers)
    cells[0].set_param_args()   # ['-S', "++data.dataset='mnist5k'", ...]

`spec` is the `experiment` mapping of params/claims.yaml (after a tier's keys replaced its own).
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

    @property
    def cell_id(self) -> str:
        """`<dataset>-s<seed>-<setting>`: the folder under the runs directory."""
        return f"{self.dataset}-s{self.seed}-{self.setting}"

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
            args += ["-S", f"++{key}={hydra_value(value)}"]
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


def plan_cells(spec: Mapping[str, Any], uses_centers: Callable[[str], bool]) -> list[Cell]:
    """Every cell of the plan, datasets outermost, then seeds, then settings (in file order).

    `uses_centers(loss)` says whether a loss has hash centres (settings with
    `centre_losses_only: true` keep only those). A setting left with no loss is skipped.
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
    cells = []
    for dataset, data_overrides in datasets.items():
        _check_name(str(dataset), "experiment.datasets")
        data = _overrides(data_overrides, f"experiment.datasets.{dataset}")
        for seed in seeds:
            for name, overrides, variants, kept in parsed:
                if not kept:
                    continue
                values: dict[str, Any] = {**data, **common}
                for loss in kept:
                    values.update(
                        flatten(f"losses.{loss}", _mapping(loss_params[loss] or {}, f"experiment.loss_params.{loss}"))
                    )
                values.update(overrides)
                values.update(dict.fromkeys(seed_keys, seed))
                values.update({"models.losses": list(kept), "models.variants": list(variants)})
                cells.append(Cell(str(dataset), seed, name, tuple(kept), tuple(variants), values))
    return cells


def merge_tier(experiment: Mapping[str, Any], tiers: Mapping[str, Any] | None, tier: str | None) -> dict[str, Any]:
    """`experiment` with the named tier's keys replacing its own (a shallow replace, key by key)."""
    merged = dict(_mapping(experiment, "experiment"))
    if tier is None:
        return merged
    tiers = _mapping(tiers or {}, "tiers")
    if tier not in tiers:
        raise ValueError(f"tier {tier!r}: not defined; expected one of {', '.join(tiers) or '(none defined)'}")
    body = _mapping(tiers[tier], f"tiers.{tier}")
    unknown = sorted(set(body) - set(merged) - {"seed_keys", "loss_params", "common"})
    if unknown:
        raise ValueError(f"tiers.{tier}: unknown key(s) {unknown}; expected keys of `experiment`")
    merged.update(body)
    return merged
