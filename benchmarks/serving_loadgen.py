"""A small open-loop HTTP/1.1 load generator (asyncio streams, keep-alive), cheap enough to share the box.

Why not httpx or a thread pool: at 500 requests/s a general-purpose client spends a large share of a
core on itself, and on a 2-core machine that CPU is taken from the server under test. This client
writes a fixed GET request and parses only the status line and Content-Length, so it costs a few
tens of microseconds per request; its own CPU time is measured and reported.

Open loop: request ``i`` is due at ``t0 + i / rate`` whatever happened to earlier ones (a slow server
cannot slow the offered load down). Latency is measured from the due time, so time a request spent
waiting for a free connection counts (no coordinated omission); ``service`` latency (from the moment
the bytes were written) is reported too.

Run as a script, it prints one JSON object::

    python benchmarks/serving_loadgen.py --port 8000 --rate 500 --duration 60 --paths paths.txt
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np


def summary(lat_s: list[float]) -> dict[str, float | None]:
    if not lat_s:
        return {
            "p50_ms": None,
            "p90_ms": None,
            "p99_ms": None,
            "p999_ms": None,
            "max_ms": None,
            "mean_ms": None,
        }
    a = np.asarray(lat_s) * 1000.0
    q = np.percentile(a, [50, 90, 99, 99.9])
    return {
        "p50_ms": round(float(q[0]), 3),
        "p90_ms": round(float(q[1]), 3),
        "p99_ms": round(float(q[2]), 3),
        "p999_ms": round(float(q[3]), 3),
        "max_ms": round(float(a.max()), 3),
        "mean_ms": round(float(a.mean()), 3),
    }


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
            break
    if length:
        await reader.readexactly(length)
    return status


async def run_load(
    host: str,
    port: int,
    paths: list[str],
    rate: float,
    duration: float,
    connections: int,
    timeout: float = 5.0,
) -> dict[str, Any]:
    """Offer ``rate`` GET requests/s for ``duration`` s over up to ``connections`` keep-alive sockets."""
    reqs = [f"GET {p} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode() for p in paths]
    n_total = int(rate * duration)
    queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
    lat: list[float] = []
    service: list[float] = []
    statuses: dict[str, int] = {}
    errors: list[str] = []

    async def worker() -> None:
        reader = writer = None
        while True:
            job = await queue.get()
            if job is None:
                break
            i, due = job
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                sent = time.perf_counter()
                writer.write(reqs[i % len(reqs)])
                assert reader is not None
                status = await asyncio.wait_for(_read_response(reader), timeout)
                done = time.perf_counter()
                lat.append(done - due)
                service.append(done - sent)
                statuses[str(status)] = statuses.get(str(status), 0) + 1
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as e:
                errors.append(type(e).__name__)
                if writer is not None:
                    writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    workers = [asyncio.create_task(worker()) for _ in range(connections)]
    cpu0, t0 = time.process_time(), time.perf_counter()
    for i in range(n_total):
        due = t0 + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((i, due))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    ok = statuses.get("200", 0)
    return {
        "offered_rate": rate,
        "duration_s": duration,
        "requests": n_total,
        "completed": len(lat),
        "ok_200": ok,
        "statuses": statuses,
        "errors": len(errors) + (len(lat) - ok),
        "transport_errors": {e: errors.count(e) for e in set(errors)},
        "wall_s": round(wall, 3),
        "achieved_rate": round(ok / wall, 1),
        "latency": summary(lat),
        "service_latency": summary(service),
        "client_cpu_s": round(cpu, 3),
        "client_cpu_share_of_one_core": round(cpu / wall, 4),
        "client_max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "connections": connections,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description="open-loop HTTP GET load generator")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--paths", type=Path, required=True, help="file with one request path per line")
    ap.add_argument("--rate", type=float, required=True)
    ap.add_argument("--duration", type=float, required=True)
    ap.add_argument("--connections", type=int, default=64)
    a = ap.parse_args()
    paths = [p for p in a.paths.read_text().splitlines() if p]
    coro = run_load(a.host, a.port, paths, a.rate, a.duration, a.connections)
    try:
        import uvloop

        out = uvloop.run(coro)
        out["event_loop"] = "uvloop"
    except ImportError:
        out = asyncio.run(coro)
        out["event_loop"] = "asyncio"
    print(json.dumps(out))


if __name__ == "__main__":
    main()
