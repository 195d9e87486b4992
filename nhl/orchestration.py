"""Run DVC stages from Python (the Prefect flow, `nhl run`) with the project's environment.

A scheduled retraining and a manual `dvc repro` must share one cache and one dvc.lock, so the
flow never calls the stage scripts itself: it runs `dvc repro <target>` as a subprocess and
reads what DVC printed. A failure becomes a `StageFailed` naming the stage and its exit
status; a failed data-validation gate becomes `ValidationFailed`, which carries the failed
checks from `reports/validation/result.json` and is never worth retrying.

`dvc repro` deletes a stage's outputs before it runs the stage's command, so a failed stage leaves
the workspace without them; they are still in the DVC cache, recorded in dvc.lock, and
`dvc checkout <stage>` puts them back. Failure messages end by saying so (`restore_hint`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

VALIDATION_RESULT = Path("reports/validation/result.json")
VALIDATION_AUDIT = Path("reports/validation/audit.md")
# Exit status with which every stage script reports bad input or parameters: a retry cannot fix
# it. (1 is also an uncaught exception, e.g. out of memory, so it stays retryable; the validation
# gate's own exit 1 is told apart by its fresh result.json, see `ValidationFailed`.)
PERMANENT_EXIT_CODES = frozenset({2})
_RUNNING = re.compile(r"^Running stage '([^']+)'", re.MULTILINE)
_FAILED = re.compile(r"failed to reproduce '([^']+)'")
_EXITED = re.compile(r"exited with (-?\d+)")
_TAIL_LINES = 20


class StageFailed(RuntimeError):
    """`dvc repro` failed. `stage` is the stage DVC names (None when DVC itself failed, e.g. its
    lock was held), `exit_code` the stage command's status (None when no command ran)."""

    def __init__(self, targets: Sequence[str], returncode: int, output: str) -> None:
        self.targets = list(targets)
        self.returncode = returncode
        self.output = output
        failed = _FAILED.search(output)
        exited = _EXITED.search(output)
        self.stage = failed.group(1) if failed else None
        self.exit_code = int(exited.group(1)) if exited else None
        tail = "\n".join(output.strip().splitlines()[-_TAIL_LINES:])
        what = f"stage {self.stage!r} exited with {self.exit_code}" if self.stage else f"dvc exited with {returncode}"
        restore = f"\n{restore_hint(self.stage)}" if self.stage else ""  # no stage: DVC removed nothing
        super().__init__(f"dvc repro {' '.join(self.targets)}: {what}\n{tail}{restore}")

    @property
    def transient(self) -> bool:
        """Worth a retry: DVC itself failed (a held lock, I/O) or the command was killed or crashed
        with a status other than the stage scripts' deliberate ones (`PERMANENT_EXIT_CODES`)."""
        return self.exit_code is None or self.exit_code not in PERMANENT_EXIT_CODES


def restore_hint(stage: str | None = None) -> str:
    """How to get a failed stage's last good outputs back (see the module doc), or "" when there is
    no stage: `stage` defaults to `DVC_STAGE`, which DVC sets for the commands it runs."""
    stage = stage or os.environ.get("DVC_STAGE")
    if not stage:
        return ""
    return (
        f"DVC removed the previous outputs of stage {stage!r} before running it; "
        f"`dvc checkout {stage}` restores the last good ones from the DVC cache"
    )


def stage_error(name: str, err: BaseException | str) -> str:
    """A stage script's one-line error `<name>: error: <err>`, ending with `restore_hint()` under DVC."""
    hint = restore_hint()
    return f"{name}: error: {err}" + (f"; {hint}" if hint else "")


class ValidationFailed(RuntimeError):
    """The data-validation gate rejected the split: `failed` lists the failed checks (`check`,
    `observed`), `result` is the whole `result.json`."""

    def __init__(self, result: dict) -> None:
        self.result = result
        self.failed = [c for c in result.get("checks", []) if not c.get("success")]
        super().__init__(validation_message(result) + f"; see {VALIDATION_AUDIT}")


@dataclass
class ReproRun:
    """One successful `dvc repro`: its targets, the stages DVC ran (not the skipped ones),
    its output and wall time."""

    targets: list[str]
    ran: list[str] = field(default_factory=list)
    output: str = ""
    seconds: float = 0.0


def dvc_command(*args: str) -> list[str]:
    """`python -m dvc ...` with this interpreter, so the DVC of the project's venv runs."""
    return [sys.executable, "-m", "dvc", *args]


def dvc_env(extra: dict[str, str] | None = None, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for `dvc repro`: stage commands call `python`, so this interpreter's bin
    directory goes first on PATH; MLflow and DVC send no telemetry."""
    env = dict(os.environ if base is None else base)
    bin_dir = str(Path(sys.executable).parent)
    path = env.get("PATH", "")
    if path.split(os.pathsep)[0] != bin_dir:
        env["PATH"] = os.pathsep.join([bin_dir, path]) if path else bin_dir
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    env.setdefault("DVC_NO_ANALYTICS", "1")
    env.update(extra or {})
    return env


def stage_names(project: str | os.PathLike, env: dict[str, str] | None = None) -> list[str]:
    """Every stage of the project's dvc.yaml, foreach stages expanded (`models@csq`)."""
    done = subprocess.run(
        dvc_command("stage", "list", "--name-only"), cwd=project, env=dvc_env(env), capture_output=True, text=True
    )
    if done.returncode != 0:
        raise StageFailed(["stage list"], done.returncode, done.stdout + done.stderr)
    return [line.strip() for line in done.stdout.splitlines() if line.strip()]


def repro(
    targets: Sequence[str],
    project: str | os.PathLike,
    env: dict[str, str] | None = None,
    log: Callable[[str], None] | None = None,
) -> ReproRun:
    """Run `dvc repro *targets` in `project` (every stage when `targets` is empty).

    Each output line goes to `log` as it arrives. Raises `StageFailed` when DVC fails.
    """
    targets = list(targets)
    start = time.monotonic()
    lines: list[str] = []
    with subprocess.Popen(
        dvc_command("repro", *targets),
        cwd=project,
        env=dvc_env(env),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        bufsize=1,
    ) as process:
        assert process.stdout is not None  # stdout=PIPE
        for line in process.stdout:
            lines.append(line)
            if log is not None:
                log(line.rstrip("\n"))
    output = "".join(lines)
    if process.returncode != 0:
        raise StageFailed(targets, process.returncode, output)
    return ReproRun(targets, _RUNNING.findall(output), output, time.monotonic() - start)


def read_validation(project: str | os.PathLike, since: float | None = None) -> dict | None:
    """The validation gate's `result.json`, or None when it is missing, unreadable, or (with
    `since`, a `time.time()` value) older than that: a stale verdict must not be reported."""
    path = Path(project) / VALIDATION_RESULT
    try:
        if since is not None and path.stat().st_mtime < since:
            return None
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) else None


def validation_message(result: dict) -> str:
    """One line: passed, or how many checks failed and which, with what was observed."""
    checks = result.get("checks", [])
    failed = [c for c in checks if not c.get("success")]
    if result.get("success") and not failed:
        return f"manifest validation passed ({len(checks)} checks)"
    parts = [f"{c.get('check')} ({c.get('observed')})" for c in failed] or [str(n) for n in result.get("failed", [])]
    return f"manifest validation failed {len(parts)} of {len(checks)} checks: " + "; ".join(parts)


def validation_summary(result: dict) -> dict:
    """The part of `result.json` worth carrying in a flow's result: verdict, failed checks, sizes."""
    return {
        "success": bool(result.get("success")),
        "failed": [c.get("check") for c in result.get("checks", []) if not c.get("success")],
        "dataset": result.get("dataset"),
        "protocol": result.get("protocol"),
        "sizes": result.get("sizes"),
        "content_hash": result.get("content_hash"),
    }
