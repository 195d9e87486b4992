"""Prefect flow `claims`: the cells of a claims plan as tasks on a Dask cluster (`--executor dask`).

One task per cell, run by `prefect_dask.DaskTaskRunner`: a `LocalCluster` on this machine by
default, or the cluster whose scheduler is at `--scheduler tcp://host:port`. A task runs on a
worker, in that worker's clone of the repository at the plan's commit (`nhl.claims.fanout`): `dvc
exp run --temp` with the cell's overrides, then `dvc exp push` to the shared git remote (outputs
to the DVC remote). The collector then pulls the experiments and collects them as the local
executor does, so the report is the same.

Faults: a worker that dies mid-cell has its task rerun on another worker by Dask (and a failed
command is retried by Prefect); experiments are keyed by name, so a cell is collected once
however often it ran; a cell already in the git remote is skipped; a clone at another commit is
refused (`CloneMismatch`, never retried).
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cloudpickle
from prefect import flow, task

# Workers unpickle this module's task by value: they need `nhl`, not this file on their path.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

RETRIES = 2
RETRY_DELAY_S = 5
LOCAL_WORKDIR = ".dvc/tmp/claims-workers/{worker}"  # a LocalCluster's clones, inside the repository


@dataclass
class FanoutOptions:
    """Where cells run and how results travel (see `pipelines/claims.py --help`)."""

    scheduler: str | None = None  # None: a LocalCluster of `workers` processes on this machine
    workers: int = 2
    git_remote: str | None = None  # None (LocalCluster only): the repository itself
    dvc_remote: str | None = None  # None (LocalCluster only): the clones share the repository's cache
    workdir: str | None = None  # the clone on each worker; `{worker}` is replaced by the worker's name
    cache_dir: str | None = None  # set by `resolve` when the clones share this repository's DVC cache


def resolve(options: FanoutOptions, root: Path) -> FanoutOptions:
    """Defaults for a LocalCluster; an existing cluster needs both remotes and the workdir. Local paths
    become absolute (workers do not share the collector's working directory)."""
    if options.scheduler and not (options.git_remote and options.dvc_remote and options.workdir):
        raise ValueError("--scheduler: also give --git-remote, --dvc-remote and --workdir (the clone on each worker)")
    if options.workers < 1:
        raise ValueError(f"--workers: expected at least 1, got {options.workers}")
    if not options.scheduler and options.workers > 1 and options.workdir and "{worker}" not in options.workdir:
        raise ValueError(
            f"--workdir {options.workdir}: {options.workers} local workers need a clone each; add {{worker}}"
        )

    def absolute(value: str | None) -> str | None:
        if value is None or "://" in value or ":" in value.split("/")[0]:
            return value  # a URL or host:path: the same from every machine
        return str((root / value).resolve())

    local = not options.scheduler
    return FanoutOptions(
        scheduler=options.scheduler,
        workers=options.workers,
        git_remote=absolute(options.git_remote) or str(root),
        dvc_remote=absolute(options.dvc_remote),
        workdir=absolute(options.workdir or LOCAL_WORKDIR) if local else options.workdir,
        cache_dir=None if options.dvc_remote else str(root / ".dvc" / "cache"),
    )


def retry_unless_refused(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect `retry_condition_fn`: a clone at the wrong commit, or a stage's bad-input exit, will not
    change by retrying; anything else (a killed command, a held lock, the network) may."""
    from nhl.claims.fanout import CellFailed, CloneMismatch

    try:
        state.result()
    except CloneMismatch:
        return False
    except CellFailed as err:
        return not err.permanent
    except Exception:  # noqa: BLE001 - any other failure (a killed command, a held lock) may pass
        return True
    return True


def _worker_name() -> str:
    try:
        from distributed import get_worker

        name = str(get_worker().name)
    except ValueError:  # not on a Dask worker (a flow run with another task runner)
        name = "local"
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _log(message: str) -> None:
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        get_run_logger().info(message)
    except MissingContextError:
        logging.getLogger("nhl.claims").info(message)


@task(
    name="claims-cell",
    task_run_name="claims-cell[{name}]",
    retries=RETRIES,
    retry_delay_seconds=RETRY_DELAY_S,
    retry_condition_fn=retry_unless_refused,
    cache_policy=None,
    persist_result=False,
)
def claims_cell(cell: Any, name: str, commit: str, options: FanoutOptions, force: bool = False) -> dict:
    """Run one cell on this worker (in its clone, made if new) and push it; what it did (`CellRun`)."""
    from nhl.claims.fanout import prepare_clone, run_cell_in_clone
    from nhl.claims.machine import describe_machine

    assert options.git_remote is not None and options.workdir is not None  # resolve() filled them
    clone = Path(options.workdir.format(worker=_worker_name()))
    prepare_clone(clone, options.git_remote, commit, options.dvc_remote, options.cache_dir)
    run = run_cell_in_clone(
        clone, cell, name, options.git_remote, describe_machine(), bool(options.dvc_remote), force, _log
    )
    _log(f"{name}: {run.status} on {run.host} in {run.seconds:.0f} s")
    return run.to_dict()


@flow(name="claims")
def claims(cells: list, prefix: str, commit: str, options: FanoutOptions, force: bool = False) -> list[dict]:
    """Submit every cell not yet in the git remote; one record per cell (`status`: ran, pushed,
    skipped or failed, with `error`), in plan order."""
    from nhl.claims.fanout import remote_experiments

    assert options.git_remote is not None
    remote = remote_experiments(Path.cwd(), options.git_remote, commit)
    futures, records = {}, {}
    for cell in cells:
        name = cell.experiment_name(prefix)
        if name in remote and not force:
            records[name] = {"name": name, "cell_id": cell.cell_id, "status": "skipped", "rev": remote[name]}
        else:
            futures[name] = claims_cell.submit(cell, name, commit, options, force)
    for name, future in futures.items():
        try:
            records[name] = future.result()
        except Exception as err:  # noqa: BLE001 - the task failed after its retries: the cell shows as missing
            records[name] = {"name": name, "status": "failed", "error": str(err).splitlines()[0]}
    return [records[cell.experiment_name(prefix)] for cell in cells]


def task_runner(options: FanoutOptions):
    """A `DaskTaskRunner` on the scheduler's cluster, or on a new LocalCluster (1 thread per worker process)."""
    from prefect_dask import DaskTaskRunner

    if options.scheduler:
        return DaskTaskRunner(address=options.scheduler)
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": options.workers,
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": None,
        }
    )


def run_flow(cells: list, prefix: str, commit: str, options: FanoutOptions, force: bool = False) -> list[dict]:
    """Run the `claims` flow. Workers report to the flow's Prefect API: without PREFECT_API_URL, one
    temporary server is started here and its address handed to them (else each would start its own)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with_runner = claims.with_options(task_runner=task_runner(options))
    if PREFECT_API_URL.value():
        return with_runner(cells, prefix, commit, options, force)
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the instance Prefect's client would start anyway (stopped at exit)
    server.start()
    with temporary_settings({PREFECT_API_URL: server.api_url}):
        return with_runner(cells, prefix, commit, options, force)


def run_and_collect_dask(
    cells: list, prefix: str, runs_dir: Path, force: bool, options: FanoutOptions
) -> tuple[list[str], str, list[dict]]:
    """Fan the cells out, pull the experiments, collect them; (failed names, baseline, flow records)."""
    from nhl.claims.dvcexp import collect_cell, experiment_refs, head_commit, untracked_code
    from nhl.claims.fanout import configure_dvc, machine_of, pull_experiments, remote_experiments

    root = Path.cwd()
    if not (root / "dvc.yaml").is_file():
        raise FileNotFoundError("dvc.yaml not found: run from the repository root")
    options = resolve(options, root)
    assert options.git_remote is not None
    baseline = head_commit(root)
    untracked = untracked_code(root)
    if untracked:
        print(
            f"claims: warning: {len(untracked)} untracked file(s) under nhl/ or pipelines/ (e.g. {untracked[0]}) "
            "are not in the workers' clones; commit them",
            file=sys.stderr,
        )
    where = options.scheduler or f"a LocalCluster of {options.workers} workers"
    print(f"claims: {len(cells)} cells on {where}; experiments via {options.git_remote}", flush=True)
    remote = {} if force else remote_experiments(root, options.git_remote, baseline)
    todo = [c for c in cells if c.experiment_name(prefix) not in remote]
    ran = {r["name"]: r for r in run_flow(todo, prefix, baseline, options, force)} if todo else {}
    records = [
        ran.get(name) or {"name": name, "cell_id": c.cell_id, "status": "skipped", "rev": remote.get(name)}
        for c in cells
        if (name := c.experiment_name(prefix))
    ]
    names = [r["name"] for r in records if r["status"] != "failed"]
    if os.path.realpath(options.git_remote) != os.path.realpath(root):
        if options.dvc_remote:
            configure_dvc(root, options.dvc_remote)
        have = experiment_refs(root, baseline)
        pull_experiments(
            root, options.git_remote, [n for n in names if force or n not in have], bool(options.dvc_remote)
        )
    existing = experiment_refs(root, baseline)
    failed = []
    for i, (cell, record) in enumerate(zip(cells, records, strict=True), start=1):
        name = cell.experiment_name(prefix)
        if name not in existing:
            print(
                f"claims: {name}: failed ({record.get('error', 'no experiment')}); its models show as missing",
                file=sys.stderr,
            )
            failed.append(name)
            continue
        print(f"claims: [{i}/{len(cells)}] {name}: {record['status']} ({record.get('host', 'remote')}), collecting")
        rev = existing[name]
        collect_cell(root, cell, name, rev, baseline, runs_dir, machine_of(root, rev))
    return failed, baseline, records
