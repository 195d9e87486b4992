"""Name the machine a claims cell ran on, so every time in the report says where it was measured.

Training times and the GPU-only paper protocol only mean something with the device attached:
`describe_machine()` gives one line such as
`2 CPU cores (AMD EPYC 7B13), 23.5 GiB RAM, no CUDA GPU; torch 2.14.1, Linux x86_64`.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

NO_GPU = "no CUDA GPU"  # the description's words for a machine without one (the report tests for them)


def cpu_model(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> str | None:
    """The CPU's model name (Linux `/proc/cpuinfo`, else `platform.processor()`); None if unknown."""
    path = Path(cpuinfo)
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                return " ".join(value.split())
    return platform.processor() or None


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def memory_gib(meminfo: str | os.PathLike = "/proc/meminfo") -> float | None:
    """Total RAM in GiB from `/proc/meminfo`; None where it cannot be read."""
    path = Path(meminfo)
    if not path.is_file():
        return None
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 2**20
    return None


def gpu_names() -> list[str]:
    """Names of the CUDA devices torch can use (empty on a CPU-only machine)."""
    import torch

    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def describe_machine() -> str:
    """One line: cores and CPU model, RAM, GPUs (or "no CUDA GPU"), torch version, OS."""
    import torch

    cores = usable_cores()
    parts = [f"{cores} CPU core{'s' if cores != 1 else ''}" + (f" ({model})" if (model := cpu_model()) else "")]
    if (ram := memory_gib()) is not None:
        parts.append(f"{ram:.1f} GiB RAM")
    gpus = gpu_names()
    parts.append(", ".join(f"GPU {name}" for name in gpus) if gpus else NO_GPU)
    return ", ".join(parts) + f"; torch {torch.__version__}, {platform.system()} {platform.machine()}"


def mixed_machines(cells: list[tuple[str, str, str | None]]) -> list[str]:
    """Warnings for datasets whose cells ran on more than one kind of machine.

    `cells` are `(dataset, cell_id, machine)`. A dataset's tables pair and pool models across its
    cells (seeds, settings), so its times (speed-ups over seeds, per-epoch overheads, the
    centres and faithful settings' costs) mix machines when these differ; a cell with no recorded
    machine counts as one more kind. Machines of one kind describe themselves alike
    (`describe_machine`: cores, CPU, RAM, GPU, torch, OS), so the description is the kind.
    """
    kinds: dict[str, dict[str, list[str]]] = {}
    for dataset, cell_id, machine in cells:
        kinds.setdefault(dataset, {}).setdefault(machine or "not recorded", []).append(cell_id)
    warnings = []
    for dataset, by_kind in kinds.items():
        if len(by_kind) > 1:
            parts = "; ".join(f"{kind} ({', '.join(ids)})" for kind, ids in by_kind.items())
            warnings.append(
                f"{dataset}: its cells ran on {len(by_kind)} kinds of machine, so its training times are not "
                f"comparable across cells: {parts}"
            )
    return warnings
