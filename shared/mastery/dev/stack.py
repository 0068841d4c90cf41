"""``mastery dev``: the whole stack on one machine, stopped as one with Ctrl-C.

Embedded ``redis-server`` and Tansu unless ``REDIS_URL`` / ``KAFKA_BOOTSTRAP_SERVERS``
are set (the embedded Redis keeps an append-only file in ``MASTERY_DATA_DIR``, so a
restart finds every student's state; Tansu keeps everything in memory); the topics;
one ``functions-framework --asgi`` process per function; a local
KafkaSource (``mastery trigger``) per event handler and topic, or the handler's own
Kafka-native worker (``mastery batch-worker``); the gateway on ``MASTERY_PORT``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import click

from mastery.dev.servers import (
    die_with_parent,
    function_argv,
    redis_argv,
    tansu_argv,
    wait_for_redis,
)
from mastery.errors import Unavailable
from mastery.events.kafka import create_topics, probe
from mastery.registry import FUNCTIONS
from mastery.settings import load
from mastery.store.client import redis_options

__all__ = ["DEV_JWT_SECRET", "Stack"]

DEV_JWT_SECRET = "dev-only-secret-change-me-0123456789abcdef"


@dataclass
class Stack:
    functions_dir: Path
    port: int
    redis_port: int = 6379
    kafka_port: int = 9092
    data_dir: Path = Path("data")
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    children: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    bases: dict[str, str] = field(default_factory=dict)
    """Each function's own address (its ``/metrics``, ``/ready``), by name."""
    metrics: dict[str, str] = field(default_factory=dict)
    """Where each Kafka-native worker serves ``/metrics`` (it serves no HTTP), by name."""

    def spawn(self, name: str, argv: list[str], **env: str) -> None:
        proc = subprocess.Popen(argv, env={**self.env, **env}, preexec_fn=die_with_parent)
        self.children.append((name, proc))

    def start(self) -> None:
        workdir = tempfile.mkdtemp(prefix="mastery-dev-")
        if "REDIS_URL" not in self.env:
            self.env["REDIS_URL"] = f"redis://127.0.0.1:{self.redis_port}/0"
            redis_dir = self.data_dir / "redis"
            redis_dir.mkdir(parents=True, exist_ok=True)
            self.spawn("redis", redis_argv(self.redis_port, redis_dir.resolve(), persist=True))
        if "KAFKA_BOOTSTRAP_SERVERS" not in self.env:
            self.env["KAFKA_BOOTSTRAP_SERVERS"] = f"127.0.0.1:{self.kafka_port}"
            self.env["MASTERY_KAFKA_EMBEDDED"] = "true"  # its timings, no idempotent producer
            self.spawn("tansu", tansu_argv(self.kafka_port))
        self.env.setdefault("MASTERY_JWT_SECRET", DEV_JWT_SECRET)
        settings = load(
            redis_url=self.env["REDIS_URL"],
            kafka_bootstrap_servers=self.env["KAFKA_BOOTSTRAP_SERVERS"],
            # the environment's text, parsed as Settings parses the environment
            kafka_embedded=self.env.get("MASTERY_KAFKA_EMBEDDED", "false"),
        )
        try:
            wait_for_redis(settings.redis_url, **redis_options(settings))
            probe(settings, timeout_s=30)
        except Unavailable as exc:
            raise click.ClickException(str(exc)) from exc
        create_topics(settings)

        routes: dict[str, str] = {}
        bases: dict[str, str] = {}
        ready: dict[str, str] = {}
        for i, spec in enumerate(FUNCTIONS, start=1):
            port = self.port + i
            base = f"http://127.0.0.1:{port}"
            source = self.functions_dir / spec.directory / "main.py"
            self.spawn(
                spec.name,
                function_argv(source, port),
                PORT=str(port),
            )
            bases[spec.name] = base
            self.bases[spec.name] = base
            routes |= {route: base for route in spec.routes}
            if spec.worker:  # consumes its topics itself, in the order it needs
                name = spec.worker
                ready[name] = str(Path(workdir) / f"{name}.ready")
                argv = [sys.executable, "-m", "mastery.cli", spec.worker]
                # Its metrics port follows the functions' ports, as MASTERY_METRICS_PORT
                # gives it one in a cluster.
                metrics_port = self.port + len(FUNCTIONS) + 1 + len(self.metrics)
                self.metrics[name] = f"http://127.0.0.1:{metrics_port}"
                self.spawn(
                    name,
                    [*argv, "--ready-file", ready[name]],
                    MASTERY_METRICS_PORT=str(metrics_port),
                )
                continue
            for topic in spec.topics:
                name = f"trigger-{spec.consumer_group(topic).removeprefix('mastery-')}"
                ready[name] = str(Path(workdir) / f"{name}.ready")
                self.spawn(
                    name,
                    [
                        sys.executable,
                        "-m",
                        "mastery.cli",
                        "trigger",
                        "--topic",
                        topic,
                        "--sink",
                        base + "/",
                        "--ready-file",
                        ready[name],
                    ],
                )
        self.spawn(
            "gateway",
            [
                sys.executable,
                "-m",
                "mastery.cli",
                "gateway",
                "--port",
                str(self.port),
                "--routes",
                _pairs(routes),
                "--functions",
                _pairs(bases),
                "--ready-files",
                _pairs(ready),
            ],
        )

    def wait(self) -> int:
        """Block until Ctrl-C / SIGTERM or a child dies; return the exit status."""
        stopping = False

        def on_signal(*_: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        while not stopping:
            for name, proc in self.children:
                if proc.poll() is not None:
                    click.echo(f"mastery dev: {name} exited with {proc.returncode}", err=True)
                    return 1
            time.sleep(0.2)
        return 0

    def stop(self) -> None:
        for _, proc in reversed(self.children):
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 10
        for _, proc in reversed(self.children):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _pairs(mapping: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in mapping.items())


def _kept(stack: Stack) -> str:
    if os.environ.get("REDIS_URL"):
        return ""
    return f"  (data kept in {stack.data_dir.resolve() / 'redis'})"


def _metrics_lines(stack: Stack) -> list[str]:
    """Where Prometheus scrapes: each function process serves its own ``/metrics``, each
    Kafka-native worker its metrics port."""
    if not stack.bases:
        return []
    ports = sorted(int(base.rsplit(":", 1)[1]) for base in stack.bases.values())
    query = stack.bases.get("mastery-query", next(iter(stack.bases.values())))
    return [
        f"             metrics    GET /metrics on each function, ports {ports[0]}-{ports[-1]}"
        f" (e.g. {query}/metrics)",
        *(
            f"                        {name}: {base}/metrics"
            for name, base in stack.metrics.items()
        ),
        "                        dashboard and alerts: infra/observability/",
    ]


def describe(stack: Stack) -> str:
    host = f"http://127.0.0.1:{stack.port}"
    return "\n".join(
        [
            f"mastery dev: gateway    {host}  (GET {host}/ready)",
            f"             redis      {stack.env['REDIS_URL']}{_kept(stack)}",
            f"             kafka      {stack.env['KAFKA_BOOTSTRAP_SERVERS']}",
            f"             JWT secret {stack.env['MASTERY_JWT_SECRET']}",
            "             a token:   mastery token --dev --sub s1 --role student --tenant school-a",
            *_metrics_lines(stack),
            "             Ctrl-C stops everything.",
        ]
    )
