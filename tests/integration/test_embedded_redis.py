"""The dev stack's embedded Redis keeps its data across a restart (append-only file)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import redis

from mastery.dev import servers

if TYPE_CHECKING:
    from pathlib import Path


def test_a_restarted_persistent_redis_has_every_write(tmp_path: Path) -> None:
    port = servers.free_port()
    proc = servers.start_redis(port, tmp_path, persist=True)
    client = redis.Redis(port=port)
    try:
        client.hset("m:{t:s1}:state", mapping={"v": 3})
        client.set("m:{t:s2}:x", "kept")
    finally:
        client.close()
        servers.stop(proc)  # SIGTERM: redis-server flushes the append-only file and exits
    assert (tmp_path / "appendonlydir").is_dir()

    proc = servers.start_redis(port, tmp_path, persist=True)
    client = redis.Redis(port=port)
    try:
        assert client.hgetall("m:{t:s1}:state") == {b"v": b"3"}
        assert client.get("m:{t:s2}:x") == b"kept"
    finally:
        client.close()
        servers.stop(proc)


def test_the_suites_redis_writes_nothing_to_disk(tmp_path: Path) -> None:
    argv = servers.redis_argv(6379, tmp_path)
    assert argv[argv.index("--appendonly") + 1] == "no"
    assert argv[argv.index("--save") + 1] == ""
