"""Every setting the project reads from the environment, in one typed object."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from mastery.domain import ScoringModel

__all__ = ["Settings"]


class Settings(BaseSettings):
    """Read once per process (``Settings()``); README lists every variable."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    redis_url: str = Field("redis://127.0.0.1:6379/0", validation_alias="REDIS_URL")
    redis_cluster: bool = Field(False, validation_alias="MASTERY_REDIS_CLUSTER")
    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092", validation_alias="KAFKA_BOOTSTRAP_SERVERS"
    )
    jwt_secret: SecretStr | None = Field(None, validation_alias="MASTERY_JWT_SECRET")
    jwt_secret_file: Path | None = Field(None, validation_alias="MASTERY_JWT_SECRET_FILE")
    jwt_previous_secret: SecretStr | None = Field(
        None, validation_alias="MASTERY_JWT_PREVIOUS_SECRET"
    )
    jwt_issuer: str | None = Field(None, validation_alias="MASTERY_JWT_ISSUER")
    jwt_audience: str | None = Field(None, validation_alias="MASTERY_JWT_AUDIENCE")
    jwt_leeway_s: int = Field(30, ge=0, validation_alias="MASTERY_JWT_LEEWAY_SECONDS")
    port: int = Field(8080, validation_alias="MASTERY_PORT")
    rate_limit_student: int = Field(50, gt=0, validation_alias="MASTERY_RATE_LIMIT_STUDENT")
    rate_limit_teacher: int = Field(300, gt=0, validation_alias="MASTERY_RATE_LIMIT_TEACHER")
    rate_limit_admin: int = Field(1000, gt=0, validation_alias="MASTERY_RATE_LIMIT_ADMIN")
    kafka_timeout_ms: int = Field(10_000, gt=0, validation_alias="MASTERY_KAFKA_TIMEOUT_MS")
    redis_timeout_ms: int = Field(5000, gt=0, validation_alias="MASTERY_REDIS_TIMEOUT_MS")
    max_body_bytes: int = Field(65536, gt=0, validation_alias="MASTERY_MAX_BODY_BYTES")
    consumer_group: str = Field("mastery-consume", validation_alias="MASTERY_CONSUMER_GROUP")
    batch_size: int = Field(1000, gt=0, le=10000, validation_alias="MASTERY_BATCH_SIZE")
    topic_partitions: int = Field(3, gt=0, validation_alias="MASTERY_TOPIC_PARTITIONS")
    audit_maxlen: int = Field(100_000, gt=0, validation_alias="MASTERY_AUDIT_MAXLEN")
    audit_scan_max: int = Field(50_000, gt=0, validation_alias="MASTERY_AUDIT_SCAN_MAX")
    half_life_days: float = Field(14.0, gt=0, validation_alias="MASTERY_HALF_LIFE_DAYS")
    retention_days: int = Field(90, gt=0, le=365, validation_alias="MASTERY_RETENTION_DAYS")
    min_cohort: int = Field(5, ge=1, validation_alias="MASTERY_MIN_COHORT")
    batch_topic_prefix: str = Field(
        "mastery.batch",
        pattern=r"^[A-Za-z0-9._-]{1,200}$",
        validation_alias="MASTERY_BATCH_TOPIC_PREFIX",
    )
    batch_group: str = Field("mastery-batch-worker", validation_alias="MASTERY_BATCH_GROUP")
    batch_deadline_s: int = Field(
        300, gt=0, le=86_400, validation_alias="MASTERY_BATCH_DEADLINE_SECONDS"
    )
    batch_chunk: int = Field(250, gt=0, le=1000, validation_alias="MASTERY_BATCH_CHUNK")
    batch_ttl_s: int = Field(86_400, gt=0, validation_alias="MASTERY_BATCH_TTL_SECONDS")

    def jwt_secret_value(self) -> str | None:
        """The signing secret: ``MASTERY_JWT_SECRET``, else the mounted file (OpenFaaS secrets)."""
        if self.jwt_secret is not None:
            return self.jwt_secret.get_secret_value() or None
        if self.jwt_secret_file is not None and self.jwt_secret_file.is_file():
            return self.jwt_secret_file.read_text().strip() or None
        return None

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
        )
