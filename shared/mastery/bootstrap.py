"""Builds the process's adapters from ``Settings``: the one place that opens connections.

The composition root: it stands above everything it wires (``mastery.ports`` says what
each part needs; the functions' ``main.py`` and the CLI hand these resources on).
Nothing connects at import time; ``resources()`` builds everything on first use, once
per process, inside the running event loop.
"""

from __future__ import annotations

import asyncio
import ssl
from functools import cached_property
from typing import TYPE_CHECKING

import redis.exceptions

from mastery import tracing
from mastery.errors import Misconfigured, Unavailable, root_cause, why
from mastery.events.kafka import KafkaPublisher, probe, producer_config, reader_config
from mastery.logs import logger
from mastery.ports import utc_now
from mastery.settings import Settings, load
from mastery.store import RedisStore
from mastery.store.client import redis_client
from mastery.store.ratelimit import RateLimiter
from mastery.topics import AUDIT_TOPIC
from mastery.web.auth import Authenticator

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

    from mastery.batch.runner import BatchRunner
    from mastery.domain import ScoringModel
    from mastery.events.access_log import KafkaAccessLog
    from mastery.events.ingest import Ingestor
    from mastery.ports import Clock
    from mastery.store.batches import BatchStore

__all__ = ["Resources", "build", "close_resources", "preflight", "resources", "serve_metrics"]


class Resources:
    """Every adapter of the process; each worker and handler declares the few it uses.

    Those only some functions use (the ingest path, the batch runner, the access-log
    reader) are built, and their modules imported, on first use: a function's cold start
    pays only for its own.
    """

    def __init__(self, settings: Settings, *, source: str, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self.source = source
        self.model: ScoringModel = settings.scoring_model()
        self.redis: Redis | RedisCluster = redis_client(settings)
        self.store = RedisStore(
            self.redis, self.model, settings.audit_maxlen, settings.redis_timeout_ms / 1000
        )
        self.publisher = KafkaPublisher(producer_config(settings))
        secrets = settings.jwt_secrets()
        self.authenticator: Authenticator | None = (
            Authenticator(
                secrets,
                settings.jwt_leeway_s,
                issuer=settings.jwt_issuer,
                audience=settings.jwt_audience,
                clock=clock,
            )
            if secrets
            else None
        )
        """``None`` when no JWT secret is configured: authenticated routes answer 503."""
        self.rate_limiter = RateLimiter(self.store)

    @cached_property
    def ingestor(self) -> Ingestor:
        from mastery.events.ingest import Ingestor

        return Ingestor(
            self.store,
            self.publisher,
            model=self.model,
            clock=self.clock,
            source=self.source,
            xapi_tenants=self.settings.xapi_tenants,
            group_max=self.settings.batch_size,
        )

    @cached_property
    def access_log(self) -> KafkaAccessLog:
        """Opens its connection on first read: only the audit-log function pays for it."""
        from mastery.events.access_log import KafkaAccessLog

        s = self.settings
        return KafkaAccessLog(
            reader_config(s),
            AUDIT_TOPIC,
            scan_max=s.audit_scan_max,
            timeout_s=s.kafka_timeout_ms / 1000,
        )

    @cached_property
    def batches(self) -> BatchStore:
        from mastery.store.batches import BatchStore

        return BatchStore(self.store, self.settings.batch_ttl_s)

    @cached_property
    def runner(self) -> BatchRunner:
        from mastery.batch.runner import BatchRunner

        s = self.settings
        return BatchRunner(self.store, self.batches, self.model, s.batch_chunk, self.clock)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.publisher.close)
        if "access_log" in self.__dict__:  # built: it may hold a connection
            await asyncio.to_thread(self.access_log.close)
        await self.redis.aclose()


def build(settings: Settings, *, source: str = "mastery", clock: Clock = utc_now) -> Resources:
    """Wire the adapters for ``settings``; ``clock`` is injectable for tests."""
    return Resources(settings, source=source, clock=clock)


async def preflight(res: Resources, timeout_s: float = 10.0) -> None:
    """Check that Redis and the broker accept this process's credentials and certificates.

    Raises:
        Misconfigured: either refuses us (wrong password, unknown user, untrusted or
            unreadable certificate): a worker should say so once and exit.
        Unavailable: either cannot be reached now (the worker's retries cover that).
    """
    try:
        async with asyncio.timeout(timeout_s):
            await res.redis.ping()
    except (redis.exceptions.AuthenticationError, redis.exceptions.NoPermissionError) as exc:
        raise Misconfigured(f"redis: {type(exc).__name__}: {why(exc)}") from exc
    except (redis.exceptions.ConnectionError, OSError) as exc:
        root = root_cause(exc)
        if isinstance(root, ssl.SSLError):
            raise Misconfigured(f"redis: TLS: {' '.join(str(root).split())}") from exc
        raise Unavailable(f"redis: {type(exc).__name__}: {why(exc)}") from exc
    except (redis.exceptions.TimeoutError, TimeoutError) as exc:
        raise Unavailable(f"redis: no answer within {timeout_s:g} s") from exc
    except redis.exceptions.RedisClusterException as exc:  # MASTERY_REDIS_CLUSTER=true
        if "not enabled" in str(exc):  # redis-py: "Cluster mode is not enabled on this node"
            raise Misconfigured(f"redis: REDIS_URL is not a cluster node: {why(exc)}") from exc
        raise Unavailable(f"redis: {type(exc).__name__}: {why(exc)}") from exc
    await asyncio.to_thread(probe, res.settings, timeout_s)


_lock = asyncio.Lock()
_resources: Resources | None = None


class _Provider:
    """``resources``: the process's adapters, and the check a function makes as it starts."""

    def __init__(self) -> None:
        self._settings: Settings | None = None  # read by ``check``, kept for the first call

    def check(self, source: str, *, authenticates: bool = False) -> None:
        """At a function's start (as its app is built, before any request): settings
        that do not validate, or no JWT secret where callers are ``authenticates``-ed,
        are one line in its log and exit status 2."""
        try:
            self._settings = load()
            tracing.configure(source)  # before the first request, which its span must cover
            if authenticates and not self._settings.jwt_secrets():
                raise Misconfigured(
                    "configuration: MASTERY_JWT_SECRET (or MASTERY_JWT_SECRET_FILE, a file "
                    "that exists and is not empty) is not set: this function verifies callers"
                )
        except Misconfigured as exc:
            logger(source).critical(f"cannot start: {exc}")
            raise SystemExit(2) from None

    async def __call__(self, source: str = "mastery") -> Resources:
        """The process-wide resources, built from the environment on first call.

        The first call also starts what the process reports through: tracing when the
        ``OTEL_*`` variables ask for it, ``/metrics`` on ``MASTERY_METRICS_PORT`` when set.
        """
        global _resources
        if _resources is None:
            async with _lock:
                if _resources is None:
                    settings = self._settings or load()
                    tracing.configure(source)
                    serve_metrics(settings.metrics_port, source)
                    _resources = build(settings, source=source)
        return _resources


resources = _Provider()


_metrics_ports: set[int] = set()


def serve_metrics(port: int, source: str) -> None:
    """Serve Prometheus ``/metrics`` on ``port`` (a thread), once per process; 0: not at all."""
    if not port or port in _metrics_ports:
        return
    from prometheus_client import start_http_server

    try:
        start_http_server(port)
    except OSError as exc:  # taken: the function's own /metrics still answers
        logger(source).warning("metrics port unavailable", extra={"port": port, "error": str(exc)})
        return
    _metrics_ports.add(port)


async def close_resources() -> None:
    """Close the process-wide resources (on shutdown, or between test modules)."""
    global _resources
    if _resources is not None:
        res, _resources = _resources, None
        await res.aclose()
