"""Which pipeline run a tracked run belongs to: the git state and the `nhl.pipeline_run` tag.

All runs of one `dvc repro` carry the same `nhl.pipeline_run` tag (see `pipeline_run_tag`).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from nhl.tracking.store import find_project_root

PIPELINE_RUN_TAG = "nhl.pipeline_run"
PIPELINE_RUN_ENV = "NHL_PIPELINE_RUN"  # set it to force one tag value (e.g. a scheduler's run id)
# Tracked files that a `dvc repro` itself rewrites: they must not make the tree look dirty halfway.
GENERATED_PATHS = ("dvc.lock", "reports")


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, timeout=30)


def git_state(project_root: str | os.PathLike) -> tuple[str | None, bytes]:
    """(HEAD commit or None, `git diff HEAD` of tracked files except `GENERATED_PATHS`)."""
    root = Path(project_root)
    try:
        head = _git(root, "rev-parse", "HEAD")
    except (OSError, subprocess.SubprocessError):
        return None, b""
    if head.returncode != 0:
        return None, b""
    excludes = [f":(exclude){path}" for path in GENERATED_PATHS]
    diff = _git(root, "diff", "HEAD", "--no-ext-diff", "--binary", "--", ".", *excludes)
    return head.stdout.decode().strip(), diff.stdout if diff.returncode == 0 else b""


def pipeline_run_tag(project_root: str | os.PathLike | None = None) -> str:
    """A value shared by every run of one `dvc repro`: `<commit[:10]>[-dirty]-<digest[:8]>`.

    The digest hashes params.yaml's bytes and the uncommitted diff of tracked files, so the same
    code and parameters give the same tag in every stage of a pipeline run, and a change in
    either gives a new one. Stage outputs never change it: they are ignored by git or listed in
    `GENERATED_PATHS`. Untracked files are not considered. Two `dvc repro` of an unchanged
    project share a tag (they tell apart by start time); `$NHL_PIPELINE_RUN`, when set, is used
    as is (e.g. a scheduler's run id). Outside git the commit part reads `nogit`.
    """
    if os.environ.get(PIPELINE_RUN_ENV):
        return os.environ[PIPELINE_RUN_ENV]
    root = Path(project_root).resolve() if project_root is not None else find_project_root()
    params = root / "params.yaml"
    commit, diff = git_state(root)
    digest = hashlib.sha256()
    digest.update(params.read_bytes() if params.is_file() else b"")
    digest.update(b"\0")
    digest.update(diff)
    dirty = "-dirty" if diff else ""
    return f"{(commit or 'nogit')[:10]}{dirty}-{digest.hexdigest()[:8]}"
