"""Start or join Ray: the one place every Ray-backed step (encoding, training, evaluation, tuning) connects.

Why one place: a wrong address must stop at start-up with one line naming it, whichever command was
given it. Left to itself, ``ray.init("10.0.0.9:6379")`` prints C++ warnings for ~35 s before a
timeout, and ``ray.init("ray://host:10001")`` waits 30 s; so a TCP probe of the address (a few
seconds) runs first and its failure is a :class:`~modalrec.core.errors.ConfigError` (the CLI prints
it without a traceback, exit code 2).

Addresses: ``None`` starts a local Ray runtime on this machine (or reuses the one already running in
this process); ``"auto"`` joins the cluster started on this machine with ``ray start --head``;
``"host:port"`` joins a cluster's GCS (port 6379 when omitted); ``"ray://host:port"`` connects
through Ray Client (port 10001 when omitted; needs the ``ray`` extra's ``client`` part).
"""

from __future__ import annotations

import os
import socket
from typing import Any

from modalrec.core.errors import ConfigError

#: Seconds to wait for a TCP connection to the given address before calling it unreachable.
PROBE_SECONDS = 5.0

#: Default ports: Ray Client's server and a head node's GCS.
CLIENT_PORT = 10001
GCS_PORT = 6379


def import_ray() -> Any:
    """The ``ray`` module, or a :class:`ConfigError` naming the extra to install."""
    # Ray Data logs every dataset execution at INFO to the console; our progress output says enough.
    os.environ.setdefault("RAY_DATA_LOG_LEVEL", "WARNING")
    try:
        import ray
    except ImportError:
        raise ConfigError("the Ray backend needs Ray: pip install 'modalrec[ray]'") from None
    return ray


def split_address(address: str) -> tuple[str, int]:
    """``(host, port)`` of a Ray address, with Ray's default port when none is given.

    >>> split_address("ray://head.example:10001"), split_address("ray://head"), split_address("10.0.0.9")
    (('head.example', 10001), ('head', 10001), ('10.0.0.9', 6379))
    >>> split_address("10.0.0.9:port")
    Traceback (most recent call last):
    modalrec.core.errors.ConfigError: Ray address '10.0.0.9:port': the port is not a number
    """
    client = address.startswith("ray://")
    rest = address[len("ray://") :] if client else address
    rest = rest.split("/", 1)[0]
    host, sep, port = rest.rpartition(":")
    if not sep:
        host, port = rest, ""
    if not host:
        raise ConfigError(f"Ray address {address!r}: no host (expected host:port or ray://host:port)")
    if port and not port.isdigit():
        raise ConfigError(f"Ray address {address!r}: the port is not a number")
    return host, int(port) if port else (CLIENT_PORT if client else GCS_PORT)


def probe(address: str, timeout: float = PROBE_SECONDS) -> None:
    """Raise :class:`ConfigError` naming ``address`` unless a TCP connection to it opens in ``timeout`` s."""
    host, port = split_address(address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except OSError as e:
        reason = "timed out" if isinstance(e, TimeoutError) else (e.strerror or type(e).__name__)
        raise ConfigError(
            f"cannot reach the Ray cluster at {address!r} ({host}:{port}: {reason}); "
            f"check the address or start the cluster (ray start --head)"
        ) from None


def connect(address: str | None = None, num_cpus: int | None = None) -> Any:
    """Join the Ray cluster at ``address`` (or start a local runtime) and return the ``ray`` module.

    A runtime already initialised in this process is reused as it is (tests start one with
    ``ray.init(num_cpus=2)``); a given ``address`` is still probed, so a wrong one never passes
    unnoticed. ``num_cpus`` sizes a local runtime only (default: every core).
    """
    ray = import_ray()
    if address is not None and address != "auto":
        probe(address)
    if ray.is_initialized():
        return ray
    opts: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if address is None:
        ray.init(num_cpus=num_cpus or os.cpu_count() or 2, **opts)
        return ray
    try:
        ray.init(address=address, **opts)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"cannot connect to the Ray cluster at {address!r}: {first}") from None
    return ray


def cluster_cpus(ray: Any) -> int:
    """CPUs the connected cluster offers (at least 1): the default number of parallel tasks."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))
