"""``mastery dev`` (``make run``): where its Kafka-native worker serves ``/metrics``."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mastery.dev import servers
from mastery.dev.stack import Stack, describe
from mastery.registry import FUNCTIONS
from tests.manifests import ROOT

if TYPE_CHECKING:
    import pytest


@dataclass
class _Recorded(Stack):
    """The stack's plan against real servers: what it would start, started by the test."""

    spawned: dict[str, tuple[list[str], dict[str, str]]] = field(default_factory=dict)

    def spawn(self, name: str, argv: list[str], **env: str) -> None:
        self.spawned[name] = (argv, env)


def test_the_batch_worker_serves_metrics_where_mastery_dev_says(
    single_redis_url: str, kafka_servers: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MASTERY_METRICS_PORT", raising=False)
    stack = _Recorded(ROOT / "functions", servers.free_port())
    stack.env |= {"REDIS_URL": single_redis_url, "KAFKA_BOOTSTRAP_SERVERS": kafka_servers}
    stack.start()
    [worker] = [spec.worker for spec in FUNCTIONS if spec.worker]
    argv, env = stack.spawned[worker]
    port = int(env["MASTERY_METRICS_PORT"])
    taken = {stack.port, *(int(b.rsplit(":", 1)[1]) for b in stack.bases.values())}
    assert port not in taken
    assert stack.metrics == {worker: f"http://127.0.0.1:{port}"}
    assert f"{worker}: http://127.0.0.1:{port}/metrics" in describe(stack)

    proc = subprocess.Popen(argv, env={**stack.env, **env})
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{stack.metrics[worker]}/metrics", timeout=2) as r:
                    body = r.read().decode()
                break
            except OSError:
                assert proc.poll() is None, "the worker exited"
                assert time.monotonic() < deadline, "no /metrics on the worker's port"
                time.sleep(0.2)
        assert "mastery_batches_running" in body
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
