"""Nothing lost, nothing counted twice, when Redis fails over to a replica that missed writes.

Two ``mastery consume`` processes apply ~20,000 events (30 % resent duplicates) while
they are SIGKILLed and restarted, and a Redis master whose replica is held back
(SIGSTOPped, so replication stops) is SIGKILLed and the replica promoted. The
replica misses the master's last writes, whose offsets Kafka already holds as
committed: the consumers must find that out and apply those events again, whether they
keep running (they see a tenant's offsets behind what they wrote) or are restarted
(they resume from the offsets in Redis). On a single
node (the replica's data comes back on the master's address, as a virtual IP or
Sentinel-driven DNS would make it) and on a 3-master cluster with replicas
(``CLUSTER FAILOVER TAKEOVER``). Every student's state must equal a reference built
from the unique events alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
import redis as sync_redis

from mastery.bootstrap import build
from mastery.dev import servers
from mastery.settings import Settings
from mastery.store import keys
from tests.conftest import JWT_SECRET
from tests.helpers import committed, fresh_topics, process_env, produce, resent_stream

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from mastery.ports import Record

TENANTS = 6
STUDENTS = 30
UNIQUE = 15_400  # + 30 % resent: ~20,000 records


@dataclass
class _Redis:
    """The Redis under test: the processes by port, the master that will fail, its replica."""

    url: str
    cluster: bool
    workdir: Path
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    master: int = 0
    replica: int = 0
    tenant: str = ""  # one whose keys the failing master serves

    def client(self, port: int) -> sync_redis.Redis:
        return sync_redis.Redis(port=port, socket_connect_timeout=2)

    def repl_offset(self) -> int:
        return int(self.client(self.master).info("replication")["master_repl_offset"])

    def hold_back(self) -> int:
        """Stop the replica; returns the master's replication offset from which it misses
        every write. A stopped process still takes in what fits in its socket buffers
        (megabytes on loopback), so 16 MB of ballast goes first to fill them."""
        os.kill(self.procs[self.replica].pid, signal.SIGSTOP)
        master = self.client(self.master)
        master.set(keys.tenant_prefix(self.tenant) + "ballast", b"x" * (16 << 20), ex=600)
        return self.repl_offset()

    def fail_over(self) -> None:
        """SIGKILL the master, let the held-back replica go and promote it."""
        self.procs[self.master].kill()
        self.procs[self.master].wait()
        os.kill(self.procs[self.replica].pid, signal.SIGCONT)
        replica = self.client(self.replica)
        if self.cluster:
            replica.execute_command("CLUSTER FAILOVER TAKEOVER")
            _until(lambda: replica.info("replication")["role"] == "master", "promotion")
            servers.wait_for_cluster(self.replica)
            return
        replica.execute_command("REPLICAOF NO ONE")
        replica.save()
        self.procs[self.replica].terminate()
        self.procs[self.replica].wait()
        # The promoted replica's data, on the address the clients know.
        replica_dir = self.workdir / str(self.replica)
        self.procs[self.master] = servers.start_redis(
            self.master, replica_dir, "--dbfilename", "dump.rdb"
        )

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                servers.stop(proc)


def _until(check: object, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _single(workdir: Path, tenants: list[str]) -> _Redis:
    master, replica = servers.free_port(), servers.free_port()
    r = _Redis(f"redis://127.0.0.1:{master}/0", False, workdir, master=master, replica=replica)
    for port in (master, replica):
        (workdir / str(port)).mkdir()
    r.tenant = tenants[0]
    r.procs[master] = servers.start_redis(master, workdir / str(master))
    r.procs[replica] = servers.start_redis(
        replica, workdir / str(replica), "--replicaof", "127.0.0.1", str(master)
    )
    return r


def _cluster(workdir: Path, tenants: list[str]) -> _Redis:
    ports = servers.free_cluster_ports(6)
    procs = servers.start_redis_cluster(ports, workdir, replicas=1)
    url = f"redis://127.0.0.1:{ports[0]}/0"
    r = _Redis(url, True, workdir, dict(zip(ports, procs, strict=True)))
    c = r.client(ports[0])
    table = c.execute_command("CLUSTER NODES")  # {"host:port@bus": node}
    nodes = list(table.values())
    port_of = {n["node_id"]: int(a.split(":")[1].split("@")[0]) for a, n in table.items()}
    slot_of = {t: int(c.execute_command("CLUSTER KEYSLOT", keys.audit(t))) for t in tenants}

    def tenants_of(node: dict[str, Any]) -> list[str]:
        return [
            t for t, s in slot_of.items() if any(int(a) <= s <= int(b) for a, b in node["slots"])
        ]

    # The master serving most tenants fails; its replica is held back.
    master = max((n for n in nodes if "master" in n["flags"]), key=lambda n: len(tenants_of(n)))
    replica = next(n for n in nodes if n["master_id"] == master["node_id"])
    r.master, r.replica = port_of[master["node_id"]], port_of[replica["node_id"]]
    r.tenant = tenants_of(master)[0]
    # Clients start from a node that stays up (as from a service address).
    steady = next(p for p in ports if p not in (r.master, r.replica))
    r.url = f"redis://127.0.0.1:{steady}/0"
    return r


@pytest.fixture
def failing_redis(
    redis_topology: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[_Redis]:
    tenants: list[str] = request.getfixturevalue("tenants")
    r = _cluster(tmp_path, tenants) if redis_topology == "cluster" else _single(tmp_path, tenants)
    yield r
    r.stop()


@pytest.fixture
def tenants() -> list[str]:
    run = uuid.uuid4().hex[:6]
    return [f"f{i}-{run}" for i in range(TENANTS)]


class _Consumers:
    """Two ``mastery consume`` processes of one group, each can be SIGKILLed and restarted."""

    def __init__(self, settings: Settings, topic: str, group: str) -> None:
        self._env = process_env(settings, MASTERY_BATCH_SIZE="200", MASTERY_JWT_SECRET=JWT_SECRET)
        self._argv = [sys.executable, "-m", "mastery.cli", "consume", topic, "--group", group]
        self.procs = [subprocess.Popen(self._argv, env=self._env) for _ in range(2)]

    def kill_and_restart(self, i: int) -> None:
        self.procs[i].send_signal(signal.SIGKILL)  # no chance to finish its batch
        self.procs[i].wait(10)
        self.procs[i] = subprocess.Popen(self._argv, env=self._env)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Both stopped (SIGSTOP) meanwhile: what Redis holds changes only by the failover.
        Seconds: inside the group's session timeout, so as a rule no rebalance follows."""
        for p in self.procs:
            p.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            for p in self.procs:
                p.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)


async def _versions(settings: Settings, tenants: list[str]) -> dict[tuple[str, str], int]:
    res = build(settings, source="test")
    try:
        out = {}
        for t in tenants:
            for s in range(STUDENTS):
                state = await res.store.load(t, f"s{s}")
                out[(t, f"s{s}")] = state.version if state else 0
        return out
    finally:
        await res.aclose()


@pytest.mark.parametrize("after_failover", ["running", "restarted"])
async def test_a_failover_that_loses_writes_loses_no_event(
    after_failover: str,
    failing_redis: _Redis,
    tenants: list[str],
    settings: Settings,
    single_redis_url: str,
) -> None:
    reference = settings.model_copy(update={"redis_url": single_redis_url, "redis_cluster": False})
    settings = settings.model_copy(
        update={"redis_url": failing_redis.url, "redis_cluster": failing_redis.cluster}
    )
    [topic] = fresh_topics(settings, "failover")
    group = f"g-{uuid.uuid4().hex[:8]}"
    students = [f"s{i}" for i in range(STUDENTS)]
    stream, unique = resent_stream(topic, tenants, students, UNIQUE, seed=7)
    cut = len(stream) // 5
    expected = await _reference(reference, unique, tenants)

    consumers = _Consumers(settings, topic, group)
    try:
        produce(settings, stream[: 2 * cut])
        await _applied_at_least(settings, tenants, 2000)
        consumers.kill_and_restart(0)
        await _applied_at_least(settings, tenants, 3000)
        consumers.kill_and_restart(1)
        await _applied_at_least(settings, tenants, 4000)

        # Hold the replica back, let the master take writes it will never pass on...
        held_at = failing_redis.hold_back()
        produce(settings, stream[2 * cut : 4 * cut])
        _until(lambda: failing_redis.repl_offset() > held_at + 500_000, "writes to the master")
        # ...then lose them: the master dies, the replica takes over without them. The
        # consumers are held still across it, or what they apply meanwhile (to the old
        # master, then the new one) would blur how much the failover took.
        with consumers.paused():
            before = sum((await _versions(settings, tenants)).values())
            failing_redis.fail_over()
            after = sum((await _versions(settings, tenants)).values())
        assert after < before, "the failover must lose applied events for this to prove anything"

        if after_failover == "restarted":  # a rebalance: they resume from the offsets in Redis
            consumers.kill_and_restart(1)
        produce(settings, stream[4 * cut :])
        if after_failover == "restarted":
            consumers.kill_and_restart(0)
        _until(lambda: committed(settings, topic, group) == len(stream), "the group", 120)
        # Commits in Kafka say nothing of what Redis lost: wait for the counts themselves.
        deadline = time.monotonic() + 60
        while (got := await _versions(settings, tenants)) != expected:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
    finally:
        consumers.stop()

    lost = {k: (v, got[k]) for k, v in expected.items() if got[k] < v}
    doubled = {k: (v, got[k]) for k, v in expected.items() if got[k] > v}
    assert not lost, f"events lost: {lost}"
    assert not doubled, f"events counted twice: {doubled}"
    await _same_scores(settings, reference, tenants)


async def _reference(
    settings: Settings, unique: list[Record], tenants: list[str]
) -> dict[tuple[str, str], int]:
    """Apply the unique events once, in order, to the reference Redis: the expected state."""
    res = build(settings, source="test")
    try:
        for start in range(0, len(unique), 1000):
            await res.ingestor.ingest(unique[start : start + 1000])
    finally:
        await res.aclose()
    return await _versions(settings, tenants)


async def _applied_at_least(settings: Settings, tenants: list[str], n: int) -> None:
    deadline = time.monotonic() + 60
    while sum((await _versions(settings, tenants)).values()) < n:
        assert time.monotonic() < deadline, f"fewer than {n} events applied"
        await asyncio.sleep(0.2)


async def _same_scores(settings: Settings, reference: Settings, tenants: list[str]) -> None:
    """Every component's count exactly, and its sums up to float rounding (order differs)."""
    res, ref = build(settings, source="test"), build(reference, source="test")
    try:
        for t in tenants:
            for s in range(STUDENTS):
                got, want = await res.store.load(t, f"s{s}"), await ref.store.load(t, f"s{s}")
                assert (got is None) == (want is None)
                if got is None or want is None:
                    continue
                for c, agg in want.components.items():
                    mine = got.components[c]
                    assert mine.count == agg.count, (t, s, c)
                    assert mine.weighted_sum == pytest.approx(agg.weighted_sum, rel=1e-9)
                    assert mine.weight == pytest.approx(agg.weight, rel=1e-9)
    finally:
        await res.aclose()
        await ref.aclose()
