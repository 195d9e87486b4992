"""The same tiny claims plan run one cell after another vs as Prefect tasks on a 2-worker Dask LocalCluster.

Makes one committed tiny project (digits, 1 epoch, smallcnn width 8; the plan of
tests/pipeline/test_claims_fanout.py: seed 0 x two settings of one CSQ model each = 2 cells), clones
it twice, and times, each from scratch:

- `python pipelines/claims.py --params plan.yaml` (the local executor: `dvc exp run --temp` per cell),
- `python pipelines/claims.py --params plan.yaml --executor dask --workers 2` (a LocalCluster: each
  worker its own clone, experiments pushed back to the project, the DVC cache shared).

Both must find 2 of 2 models with equal metrics. On 2 cores two workers share the cores, so the gain
is small; the dask run also pays for a Prefect server, a cluster and two clones.

    python bench/claims_fanout.py            # ~5-15 min depending on the machine's load
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from pipeline_cost import make_project  # bench/ is on the path (above)

TINY = {
    "data": {"dataset": "digits", "protocol": "digits", "query": None, "train": None, "val": None},
    "train": {"epochs": 1, "backbone_params": {"width": 8}, "lengths": [8, 16], "batch_size": 64},
    "evaluate": {"pr_lengths": [8, 16]},
}
PLAN = """\
experiment:
  prefix: bench
  datasets: {digits: {}}
  seeds: [0]
  losses: [csq]
  loss_params: {csq: {quant_weight: 0.0001}}
  settings:
    base: {variants: [baseline-8], overrides: {report.examples.variant: baseline-8}}
    nested: {variants: [nhl-full]}
report: {baseline_setting: base, centres_setting: null, faithful_setting: null}
"""


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True)


def timed(project: Path, extra: list[str], env: dict[str, str]) -> tuple[float, dict]:
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "pipelines/claims.py", "--params", "plan.yaml", *extra],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.monotonic() - start
    (project / "claims.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"claims {' '.join(extra)} exited {done.returncode}; see {project / 'claims.log'}")
    metrics = {
        path.parent.parent.name + "/" + path.stem: json.loads(path.read_text())["bits"]
        for path in sorted((project / "reports/claims/runs").glob("*/metrics/*.json"))
    }
    return seconds, metrics


def main() -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    base = Path(tempfile.mkdtemp(prefix="nhl-claims-fanout-"))
    source = make_project(base / "source", TINY)
    (source / "plan.yaml").write_text(PLAN)
    git(source, "add", "-A")
    git(source, "-c", "user.name=bench", "-c", "user.email=bench@example.org", "commit", "-qm", "tiny project")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(MLFLOW_DISABLE_TELEMETRY="true", DVC_NO_ANALYTICS="1", PREFECT_HOME=str(base / "prefect"))
    results = {}
    for label, extra in (("sequential", []), ("dask, 2 workers", ["--executor", "dask", "--workers", "2"])):
        project = base / label.split(",")[0]
        subprocess.run(["git", "clone", "-q", str(source), str(project)], check=True)
        results[label] = timed(project, extra, {**env, "PYTHONPATH": str(project)})
        print(f"{label}: {results[label][0]:.0f} s, {len(results[label][1])} models", flush=True)
    (seq_s, seq_m), (dask_s, dask_m) = results.values()
    same = seq_m == dask_m
    print(f"sequential / dask = {seq_s / dask_s:.2f}; metrics equal: {same}; load average {os.getloadavg()}")
    print(f"projects kept in {base}")
    print(yaml.safe_dump({"sequential_s": round(seq_s), "dask_2_workers_s": round(dask_s)}, sort_keys=False))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
