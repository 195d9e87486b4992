"""Run claims cells on other machines and bring their experiments back (the `dask` executor's pieces).

A DVC experiment is a git ref (`refs/exps/<baseline>/<name>`), so results travel the way DVC already
moves them: a worker's clone runs `dvc exp run --temp` on a cell, then `dvc exp push <git remote>
<name>` sends the ref to a shared git remote and the cell's outputs to a DVC remote; the collector's
`dvc exp pull` brings them back and collects them as a local run would (`nhl.claims.dvcexp`).

- A cell whose experiment is already in the git remote is not run again (an interrupted plan resumes).
- A clone whose HEAD is not the plan's commit, or which has uncommitted changes, is refused
  (`CloneMismatch`): a cell must run the code the plan names.
- The machine a cell ran on is part of its experiment commit's message (`Machine: ...`), so the
  collector names the worker's machine, not its own, even for cells collected later.
- A worker killed mid-cell leaves its `dvc exp run` (a process group of its own) behind; the next
  cell run in that clone ends it first (`reap_leftover`).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from nhl.claims.dvcexp import dvc_command, experiment_refs, git, head_commit, run_environment
from nhl.claims.plan import Cell

DVC_REMOTE = "nhl-claims"  # the name of the DVC remote added to a clone's local config (.dvc/config.local)
MACHINE_FIELD = "Machine: "
HOST_FIELD = "Host: "
STATE_DIR = Path(".dvc/tmp/nhl-claims")  # in a clone: the running cell's process group, each cell's log
PIDFILE = STATE_DIR / "cell.pid"
_TAIL = 15


class CloneMismatch(ValueError):
    """A worker's clone is not at the plan's commit (or has local changes): never worth a retry."""


class CellFailed(RuntimeError):
    """A cell's `dvc exp run` or `dvc exp push` failed (its log's last lines are in the message).

    `permanent`: a stage exited with the stage scripts' bad-input status, which no retry can fix
    (`nhl.orchestration.StageFailed.transient`)."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass
class CellRun:
    """What one cell did on a worker: `ran`, `pushed` (it existed in the clone) or `skipped` (in the remote)."""

    name: str
    cell_id: str
    status: str
    rev: str | None
    machine: str | None
    host: str
    clone: str
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def _run(args: list[str], cwd: str | os.PathLike, env: dict[str, str] | None = None, timeout: float = 600):
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _dvc(root: str | os.PathLike, *args: str, env: dict[str, str] | None = None) -> None:
    """`dvc *args` in `root`; a failure is a one-line `CellFailed` with DVC's last words."""
    from nhl.orchestration import dvc_command as dvc
    from nhl.orchestration import dvc_env

    done = _run(dvc(*args), root, env or dvc_env())
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise CellFailed(f"dvc {' '.join(args[:2])} in {root}: exit {done.returncode}: {tail}")


def remote_experiments(root: str | os.PathLike, git_remote: str, baseline: str) -> dict[str, str]:
    """`{name: commit}` of the experiments on `baseline` that the git remote holds (`git ls-remote`)."""
    prefix = f"refs/exps/{baseline[:2]}/{baseline[2:]}/"
    out = git(root, "ls-remote", git_remote, "refs/exps/*").stdout
    found = {}
    for line in out.splitlines():
        rev, _, ref = line.partition("\t")
        if ref.startswith(prefix):
            found[ref[len(prefix) :]] = rev
    return found


def configure_dvc(root: str | os.PathLike, dvc_remote: str | None, cache_dir: str | None = None) -> None:
    """Point a repository at the shared DVC remote (`DVC_REMOTE`) and/or a shared cache, in its local config.

    The local config (`.dvc/config.local`) is not committed: the plan's commit stays as it was.
    """
    if dvc_remote:
        _dvc(root, "remote", "add", "--local", "--force", DVC_REMOTE, dvc_remote)
    if cache_dir:
        _dvc(root, "cache", "dir", "--local", str(cache_dir))


def prepare_clone(
    clone: str | os.PathLike, git_remote: str, commit: str, dvc_remote: str | None, cache_dir: str | None = None
) -> Path:
    """The worker's clone at `clone`, made from the git remote at `commit` if the folder is new.

    An existing clone must already be at `commit` with no local change to a tracked file, else
    `CloneMismatch` (one line saying what to do): this never checks out anything over a user's clone.
    """
    clone = Path(clone)
    if not (clone / ".git").exists():
        if clone.exists() and any(clone.iterdir()):
            raise CloneMismatch(f"worker clone {clone}: the folder exists and is not a git clone")
        clone.parent.mkdir(parents=True, exist_ok=True)
        done = _run(["git", "clone", "--quiet", "--no-checkout", git_remote, str(clone)], clone.parent)
        if done.returncode != 0:
            raise CellFailed(f"git clone {git_remote} {clone}: {done.stderr.strip()}")
        checkout = _run(["git", "-C", str(clone), "checkout", "--quiet", "--detach", commit], clone)
        if checkout.returncode != 0:
            raise CloneMismatch(
                f"worker clone {clone}: the plan's commit {commit[:10]} is not in {git_remote}; push it"
            )
    head = head_commit(clone)
    if head != commit:
        raise CloneMismatch(
            f"worker clone {clone} is at commit {head[:10]}, the plan at {commit[:10]}: "
            f"run `git -C {clone} fetch && git -C {clone} checkout {commit[:10]}` there, or use another --workdir"
        )
    changed = git(clone, "status", "--porcelain", "--untracked-files=no").stdout.strip()
    if changed:
        raise CloneMismatch(
            f"worker clone {clone} has uncommitted changes ({changed.splitlines()[0].strip()}): "
            "a cell must run the plan's commit as it is"
        )
    configure_dvc(clone, dvc_remote, cache_dir)
    return clone


def experiment_message(cell: Cell, machine: str, host: str) -> str:
    """The experiment commit's message: the cell, then the machine and host it ran on."""
    return f"claims cell {cell.cell_id}\n\n{MACHINE_FIELD}{machine}\n{HOST_FIELD}{host}\n"


def machine_of(root: str | os.PathLike, rev: str) -> str | None:
    """The machine an experiment ran on, from its commit message; None for one made without it."""
    message = git(root, "log", "-1", "--format=%B", rev, check=False).stdout
    for line in message.splitlines():
        if line.startswith(MACHINE_FIELD):
            return line[len(MACHINE_FIELD) :].strip() or None
    return None


def reap_leftover(clone: str | os.PathLike) -> bool:
    """End the process group of a cell left running in `clone` by a worker that died; True if one was.

    A clone serves one worker, one cell at a time (`{worker}` in a LocalCluster's workdir, one
    single-threaded worker per machine otherwise), so a recorded group is never a live cell's."""
    path = Path(clone) / PIDFILE
    try:
        host, pgid = path.read_text().split()
        leader = int(pgid)
    except (OSError, ValueError):
        return False
    path.unlink(missing_ok=True)
    if host != socket.gethostname():
        return False
    try:
        os.killpg(leader, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-_TAIL:])


def run_cell_in_clone(
    clone: str | os.PathLike,
    cell: Cell,
    name: str,
    git_remote: str,
    machine: str,
    dvc_remote: bool = True,
    force: bool = False,
    log: Callable[[str], None] | None = None,
) -> CellRun:
    """Run one cell's experiment in a prepared clone and push it (and its outputs) to the remotes.

    Skipped when the git remote already holds the experiment (unless `force`); only pushed when the
    clone already has it (a previous attempt ran it but died before pushing). `dvc_remote`: push
    the outputs to the clone's `DVC_REMOTE`; False when the clones share the collector's cache.
    """
    clone = Path(clone)
    host = socket.gethostname()
    start = time.monotonic()
    baseline = head_commit(clone)

    def done(status: str, rev: str | None) -> CellRun:
        return CellRun(name, cell.cell_id, status, rev, machine, host, str(clone), time.monotonic() - start)

    remote = remote_experiments(clone, git_remote, baseline)
    if name in remote and not force:
        return done("skipped", remote[name])
    reap_leftover(clone)
    local = experiment_refs(clone, baseline)
    status = "pushed"
    if name not in local or force:
        (clone / STATE_DIR).mkdir(parents=True, exist_ok=True)
        logfile = clone / STATE_DIR / f"{name}.log"
        command = dvc_command(cell, name, force) + ["-m", experiment_message(cell, machine, host)]
        if log:
            log(f"{name}: dvc exp run in {clone} on {host}")
        with open(logfile, "w") as out:
            process = subprocess.Popen(
                command,
                cwd=clone,
                env=run_environment(name),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            (clone / PIDFILE).write_text(f"{host} {process.pid}\n")
            code = process.wait()
        (clone / PIDFILE).unlink(missing_ok=True)
        local = experiment_refs(clone, baseline)
        if code != 0 or name not in local:
            from nhl.orchestration import StageFailed

            stage = StageFailed([name], code, logfile.read_text(errors="replace"))
            raise CellFailed(
                f"{name}: dvc exp run exited with {code} in {clone} ({stage.stage or 'no stage'} failed); "
                f"last lines of {logfile}:\n{_tail(logfile)}",
                permanent=stage.stage is not None and not stage.transient,
            )
        status = "ran"
    push = ["exp", "push", *(["--remote", DVC_REMOTE] if dvc_remote else ["--no-cache"])]
    _dvc(clone, *push, *(["--force"] if force else []), git_remote, name, env=run_environment(name))
    return done(status, local[name])


def pull_experiments(root: str | os.PathLike, git_remote: str, names: list[str], dvc_remote: bool = True) -> None:
    """`dvc exp pull` the named experiments (and their outputs, from `DVC_REMOTE`) into `root`."""
    if names:
        pull = ["exp", "pull", "--force", *(["--remote", DVC_REMOTE] if dvc_remote else ["--no-cache"])]
        _dvc(root, *pull, git_remote, *names)
