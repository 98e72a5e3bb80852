"""What a benchmark ran on, precisely enough to tell whether two runs' floating-point numbers can agree.

Why: a trained model's numbers depend on the host's float kernels, not only on the code and the seed.
Issue 18 found TikTok graphmm fits of one day that the committed code reproduces nowhere else (plan
amendment 9 of benchmarks/plans/multimodal.toml), and the results recorded only "x86_64, 2 cores", so
nobody could tell which host they came from. :func:`host_record` keeps the CPU model, its vector
extensions, the BLAS and torch kernels chosen and the library versions; :func:`float_fingerprint`
hashes a few float32 computations of the kinds our models run (a GEMM, a sparse product, a softmax
cross-entropy step and an exact top-k). Two hosts with the same fingerprint compute these identically;
different fingerprints explain why a re-run can differ.

>>> len(float_fingerprint())
12
>>> float_fingerprint() == float_fingerprint()
True
"""

from __future__ import annotations

import hashlib
import os
import platform
from importlib import metadata
from typing import Any

import numpy as np

FLAGS_OF_INTEREST = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")


def cpu_model() -> tuple[str, list[str]]:
    """The CPU's model name and which of :data:`FLAGS_OF_INTEREST` it has (Linux; '?' elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return "?", []
    model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "?")
    flags = next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), [])
    return model, [f for f in FLAGS_OF_INTEREST if f in flags]


def float_fingerprint() -> str:
    """12 hex digits hashing float32 results of the operations our trained models run, on fixed data,
    with one thread (as the benchmarks train: some kernels round differently with more threads)."""
    from threadpoolctl import threadpool_limits

    from modalrec.core.threads import torch_threads

    with torch_threads(1), threadpool_limits(1):
        return _fingerprint_one_thread()


def _fingerprint_one_thread() -> str:
    import scipy.sparse as sp
    import torch

    rng = np.random.default_rng(7)
    a = rng.standard_normal((257, 129)).astype(np.float32)
    b = rng.standard_normal((129, 263)).astype(np.float32)
    h = hashlib.sha1((a @ b).tobytes())  # numpy's BLAS sgemm (content kNN graphs)
    s = sp.random(300, 257, density=0.02, random_state=7, dtype=np.float32, format="csr")
    h.update((s @ a).tobytes())  # scipy sparse x dense (graph propagation)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(512, 96, generator=g, requires_grad=True)
    w = torch.randn(96, 1031, generator=g)
    loss = torch.nn.functional.cross_entropy(
        torch.nn.functional.normalize(x, dim=1) @ w / 0.2, torch.arange(512) % 1031
    )
    loss.backward()
    assert x.grad is not None
    h.update(x.grad.numpy().tobytes())  # torch GEMM + softmax cross-entropy backward (training)
    h.update(torch.topk(x.detach() @ x.detach().T, 10, dim=1).indices.numpy().tobytes())  # exact top-k
    return h.hexdigest()[:12]


def host_record() -> dict[str, Any]:
    """The host: CPU, vector extensions, kernels chosen, library versions and :func:`float_fingerprint`."""
    import torch

    model, flags = cpu_model()
    versions = {}
    for lib in ("numpy", "scipy", "torch", "faiss-cpu"):
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            continue
    from threadpoolctl import threadpool_info

    blas = sorted(
        {f"{i['internal_api']} {i.get('version')} {i.get('architecture')}" for i in threadpool_info()}
    )
    return {
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "cpu": model,
        "cpu_flags": flags,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "thread_pools": blas,
        "python": platform.python_version(),
        "versions": versions,
        "float_fingerprint": float_fingerprint(),
    }


def host_line(host: dict[str, Any]) -> str:
    """One line for a results Markdown file."""
    return (
        f"{host['cpu']} ({', '.join(host['cpu_flags']) or 'no listed extensions'}; torch kernels "
        f"{host['torch_cpu_capability']}), float fingerprint {host['float_fingerprint']}"
    )
