"""Every setting the project reads from the environment, in one typed object."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from mastery.domain import ScoringModel
from mastery.errors import Misconfigured
from mastery.topics import BATCH_PREFIX

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["Settings", "load"]


class Settings(BaseSettings):
    """Read once per process (``load()``); README lists every variable."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    redis_url: str = Field("redis://127.0.0.1:6379/0", validation_alias="REDIS_URL")
    redis_cluster: bool = Field(False, validation_alias="MASTERY_REDIS_CLUSTER")
    redis_username: str | None = Field(None, validation_alias="REDIS_USERNAME")
    redis_password: SecretStr | None = Field(None, validation_alias="REDIS_PASSWORD")
    redis_password_file: Path | None = Field(None, validation_alias="REDIS_PASSWORD_FILE")
    redis_tls_ca_file: Path | None = Field(None, validation_alias="REDIS_TLS_CA_FILE")
    redis_tls_cert_file: Path | None = Field(None, validation_alias="REDIS_TLS_CERT_FILE")
    redis_tls_key_file: Path | None = Field(None, validation_alias="REDIS_TLS_KEY_FILE")
    redis_connect_timeout_ms: int = Field(
        2000, gt=0, validation_alias="MASTERY_REDIS_CONNECT_TIMEOUT_MS"
    )
    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092", validation_alias="KAFKA_BOOTSTRAP_SERVERS"
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", validation_alias="KAFKA_SECURITY_PROTOCOL"
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, validation_alias="KAFKA_SASL_MECHANISM"
    )
    kafka_sasl_username: str | None = Field(None, validation_alias="KAFKA_SASL_USERNAME")
    kafka_sasl_username_file: Path | None = Field(None, validation_alias="KAFKA_SASL_USERNAME_FILE")
    kafka_sasl_password: SecretStr | None = Field(None, validation_alias="KAFKA_SASL_PASSWORD")
    kafka_sasl_password_file: Path | None = Field(None, validation_alias="KAFKA_SASL_PASSWORD_FILE")
    kafka_ssl_ca_location: Path | None = Field(None, validation_alias="KAFKA_SSL_CA_LOCATION")
    kafka_ssl_certificate_location: Path | None = Field(
        None, validation_alias="KAFKA_SSL_CERTIFICATE_LOCATION"
    )
    kafka_ssl_key_location: Path | None = Field(None, validation_alias="KAFKA_SSL_KEY_LOCATION")
    kafka_ssl_key_password: SecretStr | None = Field(
        None, validation_alias="KAFKA_SSL_KEY_PASSWORD"
    )
    kafka_properties: dict[str, Any] = Field(
        default_factory=dict, validation_alias="MASTERY_KAFKA_PROPERTIES"
    )
    """Any other librdkafka property, as a JSON object; applied last, so it wins."""
    kafka_embedded: bool = Field(False, validation_alias="MASTERY_KAFKA_EMBEDDED")
    """The broker is the embedded Tansu: no idempotent producer, its faster timings."""
    jwt_secret: SecretStr | None = Field(None, validation_alias="MASTERY_JWT_SECRET")
    jwt_secret_file: Path | None = Field(None, validation_alias="MASTERY_JWT_SECRET_FILE")
    jwt_previous_secret: SecretStr | None = Field(
        None, validation_alias="MASTERY_JWT_PREVIOUS_SECRET"
    )
    jwt_issuer: str | None = Field(None, validation_alias="MASTERY_JWT_ISSUER")
    jwt_audience: str | None = Field(None, validation_alias="MASTERY_JWT_AUDIENCE")
    jwt_leeway_s: int = Field(30, ge=0, validation_alias="MASTERY_JWT_LEEWAY_SECONDS")
    log_level: Literal["CRITICAL", "FATAL", "ERROR", "WARN", "WARNING", "INFO", "DEBUG"] = Field(
        "INFO", validation_alias="LOG_LEVEL"
    )
    """Read by the logger itself (``mastery.logs``); here so a bad one is a start-up line."""
    port: int = Field(8080, validation_alias="MASTERY_PORT")
    metrics_port: int = Field(0, ge=0, le=65535, validation_alias="MASTERY_METRICS_PORT")
    """Also serve Prometheus ``/metrics`` on this port (0: only on the function's own)."""
    rate_limit_student: int = Field(50, gt=0, validation_alias="MASTERY_RATE_LIMIT_STUDENT")
    rate_limit_teacher: int = Field(300, gt=0, validation_alias="MASTERY_RATE_LIMIT_TEACHER")
    rate_limit_admin: int = Field(1000, gt=0, validation_alias="MASTERY_RATE_LIMIT_ADMIN")
    kafka_timeout_ms: int = Field(10_000, gt=0, validation_alias="MASTERY_KAFKA_TIMEOUT_MS")
    redis_timeout_ms: int = Field(5000, gt=0, validation_alias="MASTERY_REDIS_TIMEOUT_MS")
    redis_max_connections: int = Field(
        100, gt=0, le=10_000, validation_alias="MASTERY_REDIS_MAX_CONNECTIONS"
    )
    erasure_replicas: int = Field(0, ge=0, validation_alias="MASTERY_ERASURE_REPLICAS")
    """Replicas that must hold an erasure before it is answered (``WAIT``; 0: none)."""
    erasure_wait_ms: int = Field(2000, gt=0, validation_alias="MASTERY_ERASURE_WAIT_MS")
    max_body_bytes: int = Field(65536, gt=0, validation_alias="MASTERY_MAX_BODY_BYTES")
    max_event_bytes: int = Field(1_048_576, gt=0, validation_alias="MASTERY_MAX_EVENT_BYTES")
    """A record delivered over HTTP (KafkaSource, the connector): one the broker took, so
    Kafka's own default message size; within it, what the engine refuses is audited and
    dead-lettered, as ``mastery consume`` does, not answered 413 (a 413 is not retried,
    and the record would go nowhere)."""
    xapi_tenants: dict[str, str] = Field(
        default_factory=dict, validation_alias="MASTERY_XAPI_TENANTS"
    )
    """``mastery.xapi``: the actor's ``account.homePage`` -> tenant (JSON object)."""
    mcp_allowed_origins: tuple[str, ...] = Field((), validation_alias="MASTERY_MCP_ALLOWED_ORIGINS")
    """Origins a web page may call ``/mcp`` from (JSON list): another ``Origin`` is 403;
    a request without one (an agent, a CLI, a server) passes."""
    consumer_group: str = Field("mastery-consume", validation_alias="MASTERY_CONSUMER_GROUP")
    batch_size: int = Field(1000, gt=0, le=10000, validation_alias="MASTERY_BATCH_SIZE")
    topic_partitions: int = Field(3, gt=0, validation_alias="MASTERY_TOPIC_PARTITIONS")
    audit_maxlen: int = Field(100_000, gt=0, validation_alias="MASTERY_AUDIT_MAXLEN")
    audit_scan_max: int = Field(50_000, gt=0, validation_alias="MASTERY_AUDIT_SCAN_MAX")
    half_life_days: float = Field(14.0, gt=0, validation_alias="MASTERY_HALF_LIFE_DAYS")
    retention_days: int = Field(90, gt=0, le=365, validation_alias="MASTERY_RETENTION_DAYS")
    min_cohort: int = Field(5, ge=1, validation_alias="MASTERY_MIN_COHORT")
    class_lapse_days: int = Field(30, gt=0, le=365, validation_alias="MASTERY_CLASS_LAPSE_DAYS")
    """A class stops being a student's once their events have carried other classes this
    many days after its last (``mastery.domain.scoring.current_classes``)."""
    batch_topic_prefix: str = Field(
        BATCH_PREFIX,
        pattern=r"^[A-Za-z0-9._-]{1,200}$",
        validation_alias="MASTERY_BATCH_TOPIC_PREFIX",
    )
    """Names the batch queues ``<prefix>.<priority>`` (``mastery.topics``)."""
    batch_group: str = Field("mastery-batch-worker", validation_alias="MASTERY_BATCH_GROUP")
    batch_deadline_s: int = Field(
        300, gt=0, le=86_400, validation_alias="MASTERY_BATCH_DEADLINE_SECONDS"
    )
    batch_chunk: int = Field(250, gt=0, le=1000, validation_alias="MASTERY_BATCH_CHUNK")
    batch_ttl_s: int = Field(86_400, gt=0, validation_alias="MASTERY_BATCH_TTL_SECONDS")

    @field_validator("kafka_security_protocol", "kafka_sasl_mechanism", "log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value  # as librdkafka, logging do

    @field_validator("kafka_properties", mode="before")
    @classmethod
    def _properties_scalar(cls, value: Any) -> Any:
        if isinstance(value, dict):
            bad = [k for k, v in value.items() if not isinstance(v, str | int | float | bool)]
            if bad:
                raise ValueError(f"librdkafka properties take scalar values: {', '.join(bad)}")
        return value

    @field_validator("mcp_allowed_origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(map(_origin, value))

    @model_validator(mode="after")
    def _wait_within_deadline(self) -> Settings:
        if self.erasure_replicas and self.erasure_wait_ms >= self.redis_timeout_ms:
            raise ValueError(
                "MASTERY_ERASURE_WAIT_MS must be below MASTERY_REDIS_TIMEOUT_MS: "
                "the erasure's WAIT runs within the Redis call's deadline"
            )
        return self

    def jwt_secret_value(self) -> str | None:
        """The signing secret: ``MASTERY_JWT_SECRET``, else the mounted file (OpenFaaS secrets)."""
        return _secret(self.jwt_secret, self.jwt_secret_file)

    def redis_password_value(self) -> str | None:
        """``REDIS_PASSWORD``, else the mounted file ``REDIS_PASSWORD_FILE``."""
        return _secret(self.redis_password, self.redis_password_file)

    def kafka_sasl_credentials(self) -> tuple[str, str] | None:
        """SASL username and password (each from its variable, else its mounted file)."""
        user = self.kafka_sasl_username or _read(self.kafka_sasl_username_file)
        password = _secret(self.kafka_sasl_password, self.kafka_sasl_password_file)
        if user is None or password is None:
            return None
        return user, password

    def jwt_secrets(self) -> list[str]:
        """Secrets that verify tokens, current first; empty when none is configured."""
        current = self.jwt_secret_value()
        if current is None:
            return []
        previous = self.jwt_previous_secret
        older = previous.get_secret_value() if previous is not None else ""
        return [current, older] if older else [current]

    def scoring_model(self) -> ScoringModel:
        return ScoringModel(
            half_life=timedelta(days=self.half_life_days),
            window=timedelta(days=self.retention_days),
            class_lapse=timedelta(days=self.class_lapse_days),
        )


def load(**values: Any) -> Settings:
    """The settings from the environment (``values`` set some, by field name, before it).

    Raises:
        Misconfigured: one line naming each variable that does not validate, and why
            (never its value: it may be a secret).
    """
    try:
        return Settings(**values)
    except ValidationError as exc:
        problems = "; ".join(map(_problem, exc.errors(include_url=False)))
        raise Misconfigured(f"configuration: {problems}") from None
    except SettingsError as exc:  # a JSON-valued variable that is not JSON
        named = re.search(r'field "(\w+)"', str(exc))
        field = Settings.model_fields.get(named[1]) if named else None
        where = field.validation_alias if field else exc
        raise Misconfigured(f"configuration: {where}: not valid JSON ({exc.__cause__})") from None


def _problem(error: Mapping[str, Any]) -> str:
    """``VARIABLE: why``; our own checks' reasons without pydantic's "Value error, "."""
    reason = str(error["ctx"]["error"]) if error["type"] == "value_error" else error["msg"]
    return f"{'.'.join(map(str, error['loc']))}: {reason}" if error["loc"] else reason


_ORIGIN = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/?#@\s]+")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(text: str) -> str:
    """``text`` as a browser sends it in ``Origin`` (RFC 6454: lower case, no default port).

    The entry is named in the error: an origin is public, every browser request carries one.
    """
    bad = ValueError(f"{text!r} is not an origin: scheme://host[:port], nothing after")
    if not _ORIGIN.fullmatch(text):
        raise bad
    parts = urlsplit(text)
    try:
        port = parts.port
    except ValueError:  # not a number, or past 65535
        raise bad from None
    if not parts.hostname:
        raise bad
    scheme, netloc = parts.scheme.lower(), parts.netloc.lower()
    if port is not None and port == _DEFAULT_PORTS.get(scheme):
        netloc = netloc.rsplit(":", 1)[0]
    return f"{scheme}://{netloc}"


def _secret(value: SecretStr | None, file: Path | None) -> str | None:
    if value is not None:
        return value.get_secret_value() or None
    return _read(file)


def _read(file: Path | None) -> str | None:
    """A mounted secret's content, stripped; ``None`` if unset, missing or empty."""
    if file is not None and file.is_file():
        return file.read_text().strip() or None
    return None
