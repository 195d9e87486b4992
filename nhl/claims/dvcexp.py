"""Run a claims cell as a DVC experiment and collect what it produced from its git commit.

`dvc exp run --temp` runs the default pipeline in a copy of the repository under `.dvc/tmp/exps`
(the workspace is not changed; the DVC cache is shared; the per-loss model stages keep their
outputs between runs and are not in DVC's run cache, so a cell retrains its models unless the
baseline commit already holds them with the same fingerprint, nhl/modelset.py) and commits the
result to `refs/exps/<baseline commit>/<name>`, listed by `dvc exp show`. Only files that git
tracks are copied: commit (or `git add`) new code first.

The experiment's commit holds `dvc.lock`, `params.yaml` and `reports/comparison.json`; the
metrics files are git-ignored in this project, so they are rebuilt from the comparison unless the
commit has them too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from nhl.claims.plan import Cell
from nhl.claims.runs import locked_md5, records_from_comparison, write_cell
from nhl.layout import loss_of, placed

COMPARISON = "reports/comparison.json"


def git(root: str | os.PathLike, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run git in `root`, capturing text output; a failure (with `check`) is a one-line error."""
    done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=120)
    if check and done.returncode != 0:
        raise ValueError(f"git {' '.join(args[:2])}: {done.stderr.strip() or 'failed'}")
    return done


def head_commit(root: str | os.PathLike, rev: str = "HEAD") -> str:
    """The full hash of `rev`: the commit experiments branch from (DVC's baseline) or were made on."""
    return git(root, "rev-parse", "--verify", f"{rev}^{{commit}}").stdout.strip()


def experiment_refs(root: str | os.PathLike, baseline: str) -> dict[str, str]:
    """`{experiment name: commit}` of the DVC experiments made on `baseline`."""
    prefix = f"refs/exps/{baseline[:2]}/{baseline[2:]}/"
    out = git(root, "for-each-ref", "--format=%(refname) %(objectname)", prefix).stdout
    refs = {}
    for line in out.splitlines():
        ref, rev = line.split()
        refs[ref[len(prefix) :]] = rev
    return refs


def show(root: str | os.PathLike, rev: str, path: str) -> str | None:
    """The text of `path` in commit `rev`, None when the commit does not have it."""
    done = git(root, "show", f"{rev}:{path}", check=False)
    return done.stdout if done.returncode == 0 else None


def locked_file_md5(md5: dict[str, str], folder: str, model_id: str, suffix: str) -> str | None:
    """A model's file hash in dvc.lock's `{path: md5}`: the file's own (`<folder>/<loss>/<id><suffix>`,
    or the flat `<folder>/<id><suffix>` of older projects), else its loss folder's directory hash
    (`<folder>/<loss>`, a `.dir` md5 whose DVC manifest lists the file's), None when absent."""
    for path in (
        placed(folder, model_id, suffix),
        Path(folder) / f"{model_id}{suffix}",
        Path(folder) / loss_of(model_id),
    ):
        if str(path) in md5:
            return md5[str(path)]
    return None


def untracked_code(root: str | os.PathLike, folders: tuple[str, ...] = ("nhl", "pipelines")) -> list[str]:
    """Untracked files under the code folders: a temp experiment would run without them."""
    out = git(root, "status", "--porcelain", "--untracked-files=all", "--", *folders).stdout
    return [line[3:] for line in out.splitlines() if line.startswith("??") and not line.endswith(".pyc")]


def run_environment(name: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a cell's `dvc exp run`.

    - PATH starts with this interpreter's folder: the stages' `python` is the project's venv.
    - PYTHONPATH=. makes the stages import `nhl` from the experiment's own copy of the code (the
      one its commit records), not from wherever the package is installed.
    - NHL_PIPELINE_RUN tags every MLflow run of the cell with the experiment's name.
    MLflow runs go to the workspace's store: DVC sets DVC_ROOT to the workspace for temp runs.
    """
    env = dict(os.environ if base is None else base)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(["."] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["NHL_PIPELINE_RUN"] = name
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    return env


def dvc_command(cell: Cell, name: str, force: bool = False) -> list[str]:
    """`python -m dvc exp run --temp --keep-going -n <name> -S ...` for one cell.

    --keep-going: a loss whose stage fails does not stop the other losses' stages. A cell with a
    failed stage saves no experiment, and its temporary copy (with the models trained so far) is
    discarded.
    """
    return [
        sys.executable,
        "-m",
        "dvc",
        "exp",
        "run",
        "--temp",
        "--keep-going",
        "-n",
        name,
        *(["-f"] if force else []),
        *cell.set_param_args(),
    ]


def run_cell(root: str | os.PathLike, cell: Cell, name: str, force: bool = False) -> int:
    """Run one cell's experiment in the foreground (its output goes to this process's); the exit code."""
    return subprocess.run(dvc_command(cell, name, force), cwd=root, env=run_environment(name)).returncode


def _lookup(sections: dict[str, Any], key: str) -> tuple[bool, Any]:
    node: Any = sections
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def check_comparison(data: dict[str, Any], cell: Cell, name: str) -> None:
    """Fail when the experiment's comparison does not reflect the cell's overrides (a stale report)."""
    quoted = (data.get("header") or {}).get("params") or {}
    for key, value in cell.overrides.items():
        if key.split(".")[0] not in quoted:
            continue
        found, actual = _lookup(quoted, key)
        if found and actual != value:
            raise ValueError(
                f"experiment {name}: {COMPARISON} has {key}={actual!r}, the cell sets {value!r}; "
                "its report stage did not run on this cell's models"
            )


def collect_cell(
    root: str | os.PathLike,
    cell: Cell,
    name: str,
    rev: str,
    baseline: str,
    runs_dir: str | os.PathLike,
    machine: str | None = None,
) -> Path:
    """Copy one finished experiment's results into `<runs_dir>/<cell_id>/` (see nhl.claims.runs).

    `machine` names where the experiment ran (`nhl.claims.machine.describe_machine()`; DVC
    experiments are local, so the collecting machine is the one that ran them).
    """
    comparison = show(root, rev, COMPARISON)
    lock = show(root, rev, "dvc.lock")
    params = show(root, rev, "params.yaml")
    if comparison is None or lock is None or params is None:
        raise ValueError(f"experiment {name} ({rev[:10]}): its commit lacks {COMPARISON}, dvc.lock or params.yaml")
    data = json.loads(comparison)
    check_comparison(data, cell, name)
    md5 = locked_md5(lock)
    by_id = {r["model_id"]: r for r in records_from_comparison(data)}
    records = []
    for model_id in cell.model_ids:
        metrics_path = str(placed("metrics", model_id, ".json"))  # the layout of nhl/layout.py
        original = show(root, rev, metrics_path)
        record = json.loads(original) if original is not None else by_id.get(model_id)
        if record is None:
            continue  # not trained (a failed stage): shown as "—"
        record["source"] = {
            "experiment": name,
            "rev": rev,
            "from": metrics_path if original is not None else COMPARISON,
            "model_md5": record.get("model_md5") or locked_file_md5(md5, "models", model_id, ".pt"),
            "metrics_md5": locked_file_md5(md5, "metrics", model_id, ".json"),
        }
        records.append(record)
    meta = {
        "cell_id": cell.cell_id,
        "dataset": cell.dataset,
        "seed": cell.seed,
        "setting": cell.setting,
        "losses": list(cell.losses),
        "variants": list(cell.variants),
        "experiment": name,
        "rev": rev,
        "baseline_rev": baseline,
        "digest": cell.digest,
        "overrides": cell.overrides,
        "models_expected": len(cell.model_ids),
        "models_found": len(records),
        "machine": machine,
    }
    return write_cell(runs_dir, meta, records, {"dvc.lock": lock, "params.yaml": params})
