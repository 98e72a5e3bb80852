"""benchmarks/machine.py: the host record and float fingerprint stamped on benchmark rows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import machine

BENCH = Path(machine.__file__).parent


def test_fingerprint_is_stable_and_ignores_the_callers_thread_count() -> None:
    """Benchmarks train with one thread; the fingerprint must not change with the caller's setting."""
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        two = machine.float_fingerprint()
        torch.set_num_threads(1)
        one = machine.float_fingerprint()
    finally:
        torch.set_num_threads(previous)
    assert one == two
    assert len(one) == 12 and int(one, 16) >= 0
    assert torch.get_num_threads() == previous


@pytest.mark.skipif(
    torch.backends.cpu.get_cpu_capability() == "DEFAULT", reason="this CPU has only the portable kernels"
)
def test_fingerprint_tells_float_kernels_apart() -> None:
    """Another torch kernel family (AVX2 on an AVX-512 host, or the portable one) rounds differently."""
    code = "import sys; sys.path.insert(0, sys.argv[1]); import machine; print(machine.float_fingerprint())"

    def run(capability: str) -> str:
        env = {"ATEN_CPU_CAPABILITY": capability, "PATH": "/usr/bin:/bin"}
        out = subprocess.run(
            [sys.executable, "-c", code, str(BENCH)], env=env, capture_output=True, text=True, check=True
        )
        return out.stdout.strip()

    assert run("default") != machine.float_fingerprint()


def test_host_record_names_cpu_kernels_and_versions() -> None:
    host = machine.host_record()
    assert host["float_fingerprint"] == machine.float_fingerprint()
    assert host["versions"]["torch"] == torch.__version__
    assert host["torch_cpu_capability"] in machine.host_line(host)
    assert set(host["cpu_flags"]) <= set(machine.FLAGS_OF_INTEREST)
