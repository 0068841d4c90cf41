"""Secured servers for tests/secure: a TLS Redis with the engine's ACL user, and the
broker behind TLS + SASL/SCRAM with a client certificate required. Once per session."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis

from mastery.dev import servers
from mastery.events.kafka import probe
from mastery.settings import Settings
from tests.conftest import JWT_SECRET
from tests.secure.certs import Pki, make_pki

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parents[2]
ADMIN_PASSWORD = "admin-only-for-the-fixture"
REDIS_PASSWORD = "redis-pw-for-the-engine"
KAFKA_USER, KAFKA_PASSWORD = "mastery-engine", "kafka-pw-for-the-engine"


def acl_rule() -> list[str]:
    """The ``ACL SETUSER`` line of docs/redis-acl.md, split as Redis takes it."""
    text = (ROOT / "docs" / "redis-acl.md").read_text()
    match = re.search(r"^ACL SETUSER .+$", text, re.MULTILINE)
    assert match, "docs/redis-acl.md has no ACL SETUSER line"
    return match.group(0).split()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def secrets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Mounted-secret files, as Kubernetes or OpenFaaS would provide them."""
    folder = tmp_path_factory.mktemp("secrets")
    (folder / "redis-password").write_text(REDIS_PASSWORD + "\n")
    (folder / "kafka-password").write_text(KAFKA_PASSWORD + "\n")
    return folder


@pytest.fixture(scope="session")
def tls_redis(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """redis-server on TLS only, default user off; the engine's user from the docs' rule."""
    port = servers.free_port()
    binary = shutil.which("redis-server")
    assert binary, "make test installs redis-server"
    argv = [
        binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
        "--tls-cert-file", str(pki.server_cert), "--tls-key-file", str(pki.server_key),
        "--tls-ca-cert-file", str(pki.ca), "--tls-auth-clients", "optional",
        "--save", "", "--appendonly", "no", "--dir", str(tmp_path_factory.mktemp("tls-redis")),
        "--user", "default", "off",
        "--user", "admin", "on", f">{ADMIN_PASSWORD}", "~*", "&*", "+@all",
    ]  # fmt: skip
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=servers.die_with_parent,
    )
    try:
        tls = {"ssl_ca_certs": str(pki.ca)}
        servers.wait_for_redis(
            f"rediss://127.0.0.1:{port}/0", username="admin", password=ADMIN_PASSWORD, **tls
        )
        admin = redis.Redis(port=port, ssl=True, username="admin", password=ADMIN_PASSWORD, **tls)
        rule = [">" + REDIS_PASSWORD if t == ">CHANGE-ME" else t for t in acl_rule()]
        admin.execute_command(*rule)
        admin.close()
        yield port
    finally:
        servers.stop(proc)


@pytest.fixture(scope="session")
def secured_broker(pki: Pki) -> Iterator[int]:
    """Tansu behind the TLS + SCRAM gateway (tests/secure/kafka_gateway.py); its port."""
    tansu_port, port = servers.free_port(), servers.free_port()
    tansu = subprocess.Popen(
        [
            *servers.tansu_argv(tansu_port)[:-1],
            f"tcp://127.0.0.1:{port}",  # clients come back through the gateway
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=servers.die_with_parent,
    )
    argv = [
        sys.executable, "-m", "tests.secure.kafka_gateway", "--port", str(port),
        "--upstream", f"127.0.0.1:{tansu_port}", "--cert", str(pki.server_cert),
        "--key", str(pki.server_key), "--client-ca", str(pki.ca),
        "--user", f"{KAFKA_USER}:{KAFKA_PASSWORD}",
    ]  # fmt: skip
    gateway = subprocess.Popen(
        argv,
        cwd=ROOT,
        preexec_fn=servers.die_with_parent,
    )
    try:
        yield port
    finally:
        servers.stop(gateway)
        servers.stop(tansu)


@pytest.fixture(scope="session")
def secure_env(pki: Pki, secrets_dir: Path, tls_redis: int, secured_broker: int) -> dict[str, str]:
    """The environment of an engine process on the secured servers (passwords from files)."""
    return {
        "REDIS_URL": f"rediss://127.0.0.1:{tls_redis}/0",
        "REDIS_USERNAME": "mastery",
        "REDIS_PASSWORD_FILE": str(secrets_dir / "redis-password"),
        "REDIS_TLS_CA_FILE": str(pki.ca),
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{secured_broker}",
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": KAFKA_USER,
        "KAFKA_SASL_PASSWORD_FILE": str(secrets_dir / "kafka-password"),
        "KAFKA_SSL_CA_LOCATION": str(pki.ca),
        "KAFKA_SSL_CERTIFICATE_LOCATION": str(pki.client_cert),
        "KAFKA_SSL_KEY_LOCATION": str(pki.client_key),
        "MASTERY_KAFKA_EMBEDDED": "true",  # Tansu behind the gateway
        "MASTERY_JWT_SECRET": JWT_SECRET,
        "MASTERY_TOPIC_PARTITIONS": "1",
    }


@pytest.fixture(scope="session")
def secure_settings(secure_env: dict[str, str]) -> Settings:
    settings = Settings(**secure_env)  # type: ignore[arg-type]
    probe(settings, timeout_s=30)
    return settings
