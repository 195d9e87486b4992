"""Model variants by name: what a model id like `csq-nhl-full` or `dsh-baseline-16` means.

| variant         | lengths              | A (adaptive weighting) | D (cascade distillation) |
|-----------------|----------------------|------------------------|--------------------------|
| `baseline-<k>`  | [k]                  | -                      | -                        |
| `nhl-noA-noD`   | all configured       | no                     | no                       |
| `nhl-A`         | all configured       | yes                    | no                       |
| `nhl-D`         | all configured       | no                     | yes                      |
| `nhl-full`      | all configured       | yes                    | yes                      |
"""

from __future__ import annotations

from dataclasses import dataclass

from nhl.models.head import check_lengths

NESTED_VARIANTS: dict[str, tuple[bool, bool]] = {
    "nhl-noA-noD": (False, False),
    "nhl-A": (True, False),
    "nhl-D": (False, True),
    "nhl-full": (True, True),
}


@dataclass(frozen=True)
class Variant:
    """The training settings a variant name stands for."""

    name: str
    lengths: tuple[int, ...]
    adaptive: bool
    distill: bool

    @property
    def is_baseline(self) -> bool:
        return len(self.lengths) == 1


def parse_variant(name: str, lengths: list[int]) -> Variant:
    """Resolve a variant name against the configured nested lengths (baselines must use one of them)."""
    lengths = check_lengths(lengths)
    if name in NESTED_VARIANTS:
        adaptive, distill = NESTED_VARIANTS[name]
        return Variant(name, tuple(lengths), adaptive, distill)
    prefix = "baseline-"
    if name.startswith(prefix) and name[len(prefix) :].isdigit():
        bits = int(name[len(prefix) :])
        if bits not in lengths:
            raise ValueError(f"variant {name!r}: {bits} bits is not one of the configured lengths {lengths}")
        return Variant(name, (bits,), False, False)
    known = ", ".join([f"baseline-<k> (k in {lengths})", *NESTED_VARIANTS])
    raise ValueError(f"variant: unknown name {name!r}; expected one of {known}")


def all_variants(lengths: list[int], nested: list[str] | None = None) -> list[str]:
    """Every baseline of `lengths` followed by the nested variants (all four by default)."""
    nested = list(NESTED_VARIANTS) if nested is None else nested
    for name in nested:
        parse_variant(name, lengths)
    return [f"baseline-{k}" for k in check_lengths(lengths)] + nested


def model_id(loss: str, variant: str) -> str:
    """The id used for file names and MLflow runs, e.g. `csq-nhl-full`."""
    return f"{loss}-{variant}"
