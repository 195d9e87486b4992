"""The machine line of the claims report: parsed from made-up /proc files, GPUs named when present."""

from __future__ import annotations

import os

import pytest

from nhl.claims import machine

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC   7B13 64-Core Processor
flags\t\t: fpu vme

processor\t: 1
model name\t: AMD EPYC   7B13 64-Core Processor
"""


def test_cpu_model_and_memory_from_proc_files(tmp_path):
    (tmp_path / "cpuinfo").write_text(CPUINFO)
    (tmp_path / "meminfo").write_text("MemTotal:       24641536 kB\nMemFree:         1000 kB\n")
    assert machine.cpu_model(tmp_path / "cpuinfo") == "AMD EPYC 7B13 64-Core Processor"
    assert machine.memory_gib(tmp_path / "meminfo") == pytest.approx(24641536 / 1024 / 1024)
    assert machine.memory_gib(tmp_path / "absent") is None


def test_usable_cores_is_this_process_affinity():
    expected = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert machine.usable_cores() == expected


def test_description_names_cores_memory_and_gpus(monkeypatch):
    import torch

    monkeypatch.setattr(machine, "usable_cores", lambda: 2)
    monkeypatch.setattr(machine, "cpu_model", lambda: "Test CPU")
    monkeypatch.setattr(machine, "memory_gib", lambda: 23.5)
    monkeypatch.setattr(machine, "gpu_names", list)
    line = machine.describe_machine()
    assert line.startswith("2 CPU cores (Test CPU), 23.5 GiB RAM, no CUDA GPU; torch ")
    assert torch.__version__ in line
    monkeypatch.setattr(machine, "gpu_names", lambda: ["NVIDIA H100 80GB HBM3"])
    monkeypatch.setattr(machine, "usable_cores", lambda: 1)
    assert "1 CPU core (Test CPU), 23.5 GiB RAM, GPU NVIDIA H100 80GB HBM3; torch" in machine.describe_machine()


def test_gpu_names_follow_torch(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert machine.gpu_names() == []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: f"GPU-{i}")
    assert machine.gpu_names() == ["GPU-0", "GPU-1"]


def test_mixed_machines_warns_per_dataset_with_more_than_one_kind():
    cpu, gpu = "2 CPU cores (A), no CUDA GPU; torch 2.14.1", "16 CPU cores (B), GPU NVIDIA H100; torch 2.14.1"
    cells = [("mnist5k", "m-s0", cpu), ("mnist5k", "m-s1", gpu), ("mnist5k", "m-s2", cpu), ("digits", "d-s0", cpu)]
    (warning,) = machine.mixed_machines(cells)
    assert warning == (
        f"mnist5k: its cells ran on 2 kinds of machine, so its training times are not comparable across cells: "
        f"{cpu} (m-s0, m-s2); {gpu} (m-s1)"
    )
    assert machine.mixed_machines([("digits", "d-s0", cpu), ("digits", "d-s1", cpu)]) == []
    assert "not recorded (d-s1)" in machine.mixed_machines([("digits", "d-s0", cpu), ("digits", "d-s1", None)])[0]
