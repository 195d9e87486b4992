"""The validation gate's outputs: `result.json` (machine-readable) and `audit.md` (for people)."""

from __future__ import annotations

import json
from pathlib import Path

from nhl import atomic
from nhl.data.manifest import SPLITS
from nhl.data.validation import ValidationResult

RESULT_NAME = "result.json"
AUDIT_NAME = "audit.md"
MAX_LISTED_MISSING = 50
MAX_LISTED_LABELS = 50  # beyond this many classes the page summarises (result.json keeps every count)
FEWEST_SHOWN = 10


def render_audit(result: ValidationResult) -> str:
    """A markdown page: verdict, provenance, split sizes, label counts, every check, missing images."""
    s = result.summary
    verdict = "PASSED" if result.success else f"FAILED ({len(result.failed)} of {len(result.checks)} checks)"
    lines = [
        f"# Data validation: {s['dataset']} / {s['protocol']}",
        "",
        f"**{verdict}**",
        "",
        f"- manifest: `{s['manifest_dir']}`",
        f"- protocol: `{s['protocol']}`, seed {s['seed']}",
        f"- content hash: `{s['content_hash']}`",
        f"- classes: {s['num_classes']} ({'multi-label' if s['multi_label'] else 'single-label'})",
        "",
        "## Split sizes",
        "",
        "| split | rows | protocol says |",
        "|---|---:|---:|",
        *[f"| {split} | {s['sizes'][split]:,} | {s['expected_sizes'][split]:,} |" for split in SPLITS],
        "",
        "## Items per label",
        "",
        *_label_lines(result, s["num_classes"]),
        "",
        "## Checks (Great Expectations)",
        "",
        "| | suite | check | expectation | observed |",
        "|---|---|---|---|---|",
        *[
            f"| {'pass' if c['success'] else '**FAIL**'} | {c['suite']} | {_cell(c['check'])} | "
            f"`{c['expectation']}` | {_cell(c['observed'])} |"
            for c in result.checks
        ],
        "",
        "## Missing images",
        "",
    ]
    missing = s["missing_images"]
    if missing["count"] == 0:
        lines.append("None: every listed image was found.")
    else:
        lines.append(f"{missing['count']:,} listed images were missing and skipped (`allow_missing`):")
        lines.append("")
        lines += [f"- `{path}`" for path in missing["paths"][:MAX_LISTED_MISSING]]
        if missing["count"] > MAX_LISTED_MISSING:
            lines.append(f"- ... and {missing['count'] - MAX_LISTED_MISSING:,} more (all in {RESULT_NAME})")
    return "\n".join(lines) + "\n"


def _label_lines(result: ValidationResult, num_classes: int) -> list[str]:
    """One row per label, or, for many classes, per-split min / median / max and the rarest labels."""
    counts = {split: result.class_counts[split] for split in SPLITS}
    if num_classes <= MAX_LISTED_LABELS:
        return [
            "| label | " + " | ".join(SPLITS) + " |",
            "|---:|" + "---:|" * len(SPLITS),
            *[
                f"| {label} | " + " | ".join(f"{counts[split][label]:,}" for split in SPLITS) + " |"
                for label in range(num_classes)
            ],
        ]
    import numpy as np

    lines = [
        f"{num_classes:,} labels: summarised per split (every count is in `{RESULT_NAME}`).",
        "",
        "| split | min | median | max | labels with no item |",
        "|---|---:|---:|---:|---:|",
    ]
    for split in SPLITS:
        c = np.asarray(counts[split])
        lines.append(
            f"| {split} | {int(c.min()):,} | {float(np.median(c)):g} | {int(c.max()):,} | {int((c == 0).sum()):,} |"
        )
    train = np.asarray(counts["train"])
    rarest = np.argsort(train, kind="stable")[:FEWEST_SHOWN]
    lines += [
        "",
        f"The {FEWEST_SHOWN} labels with the fewest train items:",
        "",
        "| label | " + " | ".join(SPLITS) + " |",
        "|---:|" + "---:|" * len(SPLITS),
        *[f"| {label} | " + " | ".join(f"{counts[split][label]:,}" for split in SPLITS) + " |" for label in rarest],
    ]
    return lines


def write_report(result: ValidationResult, directory: str | Path) -> None:
    """Replace `directory` with one holding `result.json` and `audit.md` (atomically)."""
    with atomic.directory(directory) as tmp:
        (tmp / RESULT_NAME).write_text(json.dumps(result.to_dict(), indent=2, default=str) + "\n")
        (tmp / AUDIT_NAME).write_text(render_audit(result))


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
