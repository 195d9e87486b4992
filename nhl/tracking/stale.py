"""Runs left RUNNING by a process that died (kill -9, out of memory, power loss).

`ModelRun` tags each new run with the process id and host that run it (`nhl.pid`, `nhl.host`).
A RUNNING run of a model whose process is gone is stale: `mark_stale_runs` ends it as KILLED and
tags it `nhl.stale` with why. It is called when the next run of the same model starts and by
`nhl audit`, so a dead training never stays RUNNING and is never taken for a live or finished one.
A run from another host, one without those tags, or one of this very process is left alone:
nothing here can tell whether it is still alive.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

PID_TAG = "nhl.pid"
HOST_TAG = "nhl.host"
STALE_TAG = "nhl.stale"


def process_tags() -> dict[str, str]:
    """The tags that let a later process tell whether this one is still running the run."""
    return {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}


def process_gone(pid: int, started_ms: int | None = None) -> bool:
    """Whether process `pid` of this host no longer exists (a zombie counts as gone, and so does a
    process that started after `started_ms`: the id was reused)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, owned by someone else
        pass
    stat = f"/proc/{pid}/stat"
    try:
        with open(stat) as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return False
    if fields[0] == "Z":
        return True
    if started_ms is not None:
        with open("/proc/stat") as fh:
            boot = next(int(line.split()[1]) for line in fh if line.startswith("btime"))
        began = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
        if began > started_ms / 1000 + 1:  # this pid belongs to a newer process
            return True
    return False


def stale_reason(run: Any) -> str | None:
    """Why a RUNNING run is stale (its process on this host is gone), or None if it may be alive."""
    if run.info.status != "RUNNING":
        return None
    tags = run.data.tags
    pid, host = tags.get(PID_TAG), tags.get(HOST_TAG)
    if not pid or not pid.isdigit() or host != socket.gethostname() or int(pid) == os.getpid():
        return None
    if not process_gone(int(pid), run.info.start_time):
        return None
    return f"left RUNNING by process {pid} on {host}, which is gone (killed or crashed)"


def mark_stale_runs(client: Any, experiment_ids: list[str], run_name: str) -> list[str]:
    """End the stale RUNNING runs named `run_name` as KILLED, tagged `nhl.stale`; returns their ids."""
    runs = client.search_runs(
        experiment_ids, filter_string=f"attributes.run_name = '{_quoted(run_name)}' and attributes.status = 'RUNNING'"
    )
    marked = []
    for run in runs:
        reason = stale_reason(run)
        if reason is None:
            continue
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        client.set_tag(run.info.run_id, STALE_TAG, f"{reason}; marked KILLED by process {os.getpid()} at {when}")
        client.set_terminated(run.info.run_id, status="KILLED")
        marked.append(run.info.run_id)
    return marked


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")
