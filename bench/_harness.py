"""What every benchmark shares: the servers, child processes, results and statistics.

``Stack`` owns every process the run starts. Children get their own process group (so
Ctrl-C reaches only the bench, which then stops them in order), die with the bench
even when it is SIGKILLed (``PR_SET_PDEATHSIG``), and are stopped group-wide, which
takes gunicorn's worker along with its arbiter.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from redis.asyncio import Redis

from mastery.dev.servers import (
    die_with_parent,
    free_port,
    redis_argv,
    tansu_argv,
    wait_for_redis,
)
from mastery.events.kafka import create_topics, wait_for_broker
from mastery.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

__all__ = [
    "BIN",
    "JWT_SECRET",
    "ROOT",
    "Row",
    "Stack",
    "cpu_marks",
    "cpu_seconds",
    "group_cpu_seconds",
    "machine_cpu_seconds",
    "median",
    "other_cpu",
    "percentile",
    "pinned",
    "progress",
    "spread",
]

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
JWT_SECRET = "bench-secret-0123456789abcdef0123456789abcdef"


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the results table.

    Cells are preformatted text: ``ratio`` is usually measured/baseline, for latencies
    the difference (e.g. "+3.1 ms"). ``met`` is ``None`` where the figure has no target.
    """

    benchmark: str
    figure: str
    value: str
    baseline: str = "-"
    ratio: str = "-"
    target: str = "-"
    met: bool | None = None


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def spread(values: Sequence[float]) -> str:
    """``median (min-max)`` of repeated measurements, as a table cell."""
    return f"{median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f})"


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence (``q`` in 0..100)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, all its threads (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(group: int) -> float:
    """CPU time of a process group's live processes (a function: gunicorn and its worker)."""
    return sum(cpu for g, cpu in _group_cpu_seconds() if g == group)


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, stolen) CPU seconds of the whole machine since boot, all CPUs (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / tick, steal / tick


def cpu_marks(stack: Stack) -> tuple[float, float, float, float]:
    """(wall, machine busy, machine stolen, the stack's own CPU) seconds, for ``other_cpu``."""
    busy, stolen = machine_cpu_seconds()
    return time.monotonic(), busy, stolen, stack.own_cpu_seconds()


def other_cpu(
    before: tuple[float, float, float, float], after: tuple[float, float, float, float]
) -> tuple[float, float]:
    """Shares of all CPUs that other processes took / the hypervisor stole between two marks."""
    t, busy, stolen, own = before
    t2, busy2, stolen2, own2 = after
    capacity = (t2 - t) * len(os.sched_getaffinity(0))
    return max(0.0, busy2 - busy - (own2 - own)) / capacity, (stolen2 - stolen) / capacity


def pinned() -> tuple[set[int], set[int]] | None:
    """(load-generator CPUs, server CPUs) when there are at least two CPUs to split."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    half = len(cpus) // 2
    return set(cpus[:half]), set(cpus[half:])


class Stack:
    """A redis-server for the whole run, a Tansu broker per benchmark, and their children."""

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="mastery-bench-")
        self.workdir = Path(self._tmp.name)
        self._children: list[subprocess.Popen[bytes]] = []
        self._names: dict[int, str] = {}
        self._tansu: subprocess.Popen[bytes] | None = None
        self.redis_port = free_port()
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.kafka_servers = ""
        self.redis_proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Stack:
        try:
            self.redis_proc = self.spawn("redis", redis_argv(self.redis_port, self.workdir))
            _wait_for_port(self.redis_port)
            wait_for_redis(self.redis_url)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def settings(self, **overrides: object) -> Settings:
        values: dict[str, object] = {
            "redis_url": self.redis_url,
            "kafka_bootstrap_servers": self.kafka_servers or "127.0.0.1:1",
            "jwt_secret": JWT_SECRET,
            "kafka_embedded": True,
            **overrides,
        }
        return Settings(**values)  # type: ignore[arg-type]

    def env(self, **extra: str) -> dict[str, str]:
        """The environment for a function or consumer process of this stack."""
        return {
            **os.environ,
            "REDIS_URL": self.redis_url,
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka_servers,
            "MASTERY_JWT_SECRET": JWT_SECRET,
            "MASTERY_KAFKA_EMBEDDED": "true",
            **extra,
        }

    def server_pids(self) -> dict[str, int]:
        pids = {"redis-server": self.redis_proc.pid if self.redis_proc else 0}
        if self._tansu is not None:
            pids["tansu"] = self._tansu.pid
        return pids

    @contextlib.contextmanager
    def redis_on(self, cpus: set[int] | None) -> Iterator[None]:
        """redis-server pinned to ``cpus`` (``None``: left alone) for the block, then unpinned."""
        if cpus and self.redis_proc:
            os.sched_setaffinity(self.redis_proc.pid, cpus)
        try:
            yield
        finally:
            if cpus and self.redis_proc:
                os.sched_setaffinity(self.redis_proc.pid, os.sched_getaffinity(0))

    def fresh_kafka(self) -> str:
        """Replace the broker with an empty one (memory storage); returns its bootstrap."""
        if self._tansu is not None:
            self.stop(self._tansu)
        port = free_port()
        self._tansu = self.spawn("tansu", tansu_argv(port))
        self.kafka_servers = f"127.0.0.1:{port}"
        _wait_for_port(port)
        wait_for_broker({"bootstrap.servers": self.kafka_servers}, timeout_s=30)
        return self.kafka_servers

    async def fresh_stores(self) -> Redis:
        """An empty broker with the stack's topics and an emptied Redis; a client of it."""
        self.fresh_kafka()
        create_topics(self.settings())
        client = Redis.from_url(self.redis_url)
        await client.flushall()
        return client

    def spawn(
        self,
        name: str,
        argv: Sequence[str | Path],
        *,
        env: dict[str, str] | None = None,
        cpus: set[int] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start a child; its output goes to ``<workdir>/<name>.log``.

        Only from the main thread: PR_SET_PDEATHSIG fires when the *thread* that forked
        the child ends, so a child spawned from ``asyncio.to_thread`` dies with that
        worker thread.
        """
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("spawn children from the main thread (PDEATHSIG follows the thread)")
        log = (self.workdir / f"{name}.log").open("ab")
        try:
            proc = subprocess.Popen(
                [str(a) for a in argv],
                env=env,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_child_setup(cpus),
            )
        finally:
            log.close()
        self._children.append(proc)
        self._names[proc.pid] = name
        return proc

    def wait_for_file(
        self, path: Path, proc: subprocess.Popen[bytes], timeout: float = 60
    ) -> float:
        """When ``path`` appeared (a child's readiness file); raises if ``proc`` dies first."""
        deadline = time.monotonic() + timeout
        while not path.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                name = self._names.get(proc.pid, "child")
                raise RuntimeError(f"{name} never got ready:\n{self.log_tail(name)}")
            time.sleep(0.005)
        return time.monotonic()

    def exited(self, proc: subprocess.Popen[bytes]) -> str | None:
        """``None`` while ``proc`` runs; once it exited, its name, status and last lines."""
        if proc.poll() is None:
            return None
        name = self._names.get(proc.pid, "child")
        return f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}"

    def log_tail(self, name: str, lines: int = 20) -> str:
        """The end of a child's output, for error messages."""
        path = self.workdir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
        """SIGTERM the child's process group, SIGKILL it if it lingers."""
        if proc.poll() is None:
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
        # The leader may be gone while a worker of its group lives on (gunicorn).
        _signal_group(proc, signal.SIGKILL)
        with contextlib.suppress(ValueError):
            self._children.remove(proc)

    def own_cpu_seconds(self) -> float:
        """CPU time of the bench and everything it started, reaped or alive.

        Alive: every process of each child's process group, with what its reaped children
        took (a gunicorn worker is the arbiter's child, not the bench's).
        """
        t = os.times()
        groups = {p.pid for p in self._children if p.poll() is None}
        alive = sum(cpu for group, cpu in _group_cpu_seconds() if group in groups)
        return t.user + t.system + t.children_user + t.children_system + alive

    def close(self) -> None:
        for proc in reversed(list(self._children)):
            self.stop(proc)
        self._tmp.cleanup()


def _group_cpu_seconds() -> list[tuple[int, float]]:
    """(process group, user + system CPU of the process and its reaped children) per process."""
    tick = os.sysconf("SC_CLK_TCK")
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # gone meanwhile
            continue
        found.append((int(fields[2]), sum(int(f) for f in fields[11:15]) / tick))
    return found


def _child_setup(cpus: set[int] | None) -> Callable[[], None]:
    def setup() -> None:
        die_with_parent()
        if cpus:
            os.sched_setaffinity(0, cpus)

    return setup


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _wait_for_port(port: int, timeout: float = 20) -> None:
    """Wait for a listener, so the clients' first connection attempt is not refused (and logged)."""
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")
        time.sleep(0.02)
