"""Kafka client configs and Redis options built from Settings (no I/O)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pytest
from pydantic import ValidationError

from mastery.errors import why
from mastery.events.kafka import (
    admin_config,
    consumer_config,
    kafka_common,
    producer_config,
    reader_config,
)
from mastery.settings import Settings
from mastery.store.client import redis_options

if TYPE_CHECKING:
    from pathlib import Path

_TANSU_ONLY = ("fetch.wait.max.ms", "session.timeout.ms", "heartbeat.interval.ms")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The suite marks its broker as embedded; these tests say what they mean."""
    monkeypatch.delenv("MASTERY_KAFKA_EMBEDDED", raising=False)


def _all(settings: Settings) -> list[dict[str, object]]:
    return [
        producer_config(settings),
        consumer_config(settings, "g"),
        reader_config(settings),
        admin_config(settings),
    ]


def test_a_production_broker_gets_an_idempotent_producer_and_librdkafka_timings() -> None:
    settings = Settings()
    assert producer_config(settings)["enable.idempotence"] is True
    for conf in _all(settings):
        assert not set(_TANSU_ONLY) & set(conf)
        assert conf["security.protocol"] == "PLAINTEXT"


def test_the_embedded_broker_gets_its_timings_and_no_idempotence() -> None:
    settings = Settings(kafka_embedded=True)
    assert producer_config(settings)["enable.idempotence"] is False
    consumer = consumer_config(settings, "g")
    assert consumer["fetch.wait.max.ms"] == 10
    assert consumer["session.timeout.ms"] == 6000
    assert consumer["heartbeat.interval.ms"] == 1000


def test_every_client_shares_the_security_settings_with_secrets_from_files(
    tmp_path: Path,
) -> None:
    (tmp_path / "user").write_text("engine\n")
    (tmp_path / "password").write_text("s3cret\n")
    settings = Settings(
        kafka_security_protocol="sasl_ssl",
        kafka_sasl_mechanism="scram-sha-512",
        kafka_sasl_username_file=tmp_path / "user",
        kafka_sasl_password_file=tmp_path / "password",
        kafka_ssl_ca_location=tmp_path / "ca.pem",
        kafka_ssl_certificate_location=tmp_path / "client.pem",
        kafka_ssl_key_location=tmp_path / "client.key",
        kafka_ssl_key_password="key-pw",
    )
    common = kafka_common(settings)
    assert common.pop("logger").name == "mastery.librdkafka"
    assert common == {
        "bootstrap.servers": "127.0.0.1:9092",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "engine",
        "sasl.password": "s3cret",
        "ssl.ca.location": str(tmp_path / "ca.pem"),
        "ssl.certificate.location": str(tmp_path / "client.pem"),
        "ssl.key.location": str(tmp_path / "client.key"),
        "ssl.key.password": "key-pw",
    }
    for conf in _all(settings):
        assert common.items() <= conf.items()


def test_the_password_variable_wins_over_its_file(tmp_path: Path) -> None:
    (tmp_path / "password").write_text("from-file")
    settings = Settings(
        kafka_sasl_username="u",
        kafka_sasl_password="from-env",
        kafka_sasl_password_file=tmp_path / "password",
    )
    assert settings.kafka_sasl_credentials() == ("u", "from-env")


def test_any_librdkafka_property_passes_through_and_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "MASTERY_KAFKA_PROPERTIES",
        '{"client.id": "engine-7", "linger.ms": 5, "enable.idempotence": false}',
    )
    settings = Settings()
    for conf in _all(settings):
        assert conf["client.id"] == "engine-7"
    assert producer_config(settings)["linger.ms"] == 5
    assert producer_config(settings)["enable.idempotence"] is False


def test_pass_through_properties_are_scalars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MASTERY_KAFKA_PROPERTIES", '{"client.id": {"nested": 1}}')
    with pytest.raises(ValidationError, match="scalar"):
        Settings()


def test_redis_tls_acl_user_and_password_file(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("redis-pw\n")
    settings = Settings(
        redis_url="rediss://redis.example:6380/0",
        redis_username="mastery",
        redis_password_file=tmp_path / "pw",
        redis_tls_ca_file=tmp_path / "ca.pem",
        redis_tls_cert_file=tmp_path / "c.pem",
        redis_tls_key_file=tmp_path / "c.key",
        redis_connect_timeout_ms=1500,
    )
    options = redis_options(settings)
    assert options["username"] == "mastery"
    assert options["password"] == "redis-pw"
    assert options["ssl_ca_certs"] == str(tmp_path / "ca.pem")
    assert options["ssl_certfile"] == str(tmp_path / "c.pem")
    assert options["ssl_keyfile"] == str(tmp_path / "c.key")
    assert options["socket_connect_timeout"] == 1.5


def test_a_plain_redis_url_takes_no_tls_options(tmp_path: Path) -> None:
    settings = Settings(redis_tls_ca_file=tmp_path / "ca.pem")
    assert not [k for k in redis_options(settings) if k.startswith("ssl")]
    assert "password" not in redis_options(settings)


def _raise(inner: Exception, *, chained: bool) -> None:
    try:
        raise inner
    except OSError:
        if chained:
            raise ConnectionError("network")  # noqa: B904 - as redis-py does
        raise ConnectionError("network") from None


def test_why_names_the_root_cause_a_bare_error_hides() -> None:
    with pytest.raises(ConnectionError) as hidden:
        _raise(OSError("certificate verify failed"), chained=True)
    assert why(hidden.value) == "network: OSError: certificate verify failed"
    with pytest.raises(ConnectionError) as suppressed:
        _raise(OSError("certificate verify failed"), chained=False)
    assert why(suppressed.value) == "network"


def test_librdkafka_repeats_are_logged_once_a_minute() -> None:
    log = kafka_common(Settings())["logger"]
    passed: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            passed.append(record.getMessage())

    keep = Keep()
    log.addHandler(keep)
    try:
        for ms in (11, 23, 12):  # librdkafka's retries differ only in their timing
            log.error("FAIL [rdkafka#producer-9] SASL authentication error (after %dms)", ms)
        log.error("FAIL [rdkafka#producer-9] SSL handshake failed")
    finally:
        log.removeHandler(keep)
    assert passed == [
        "FAIL [rdkafka#producer-9] SASL authentication error (after 11ms)",
        "FAIL [rdkafka#producer-9] SSL handshake failed",
    ]
