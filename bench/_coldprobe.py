"""A fresh interpreter: import a function's ``main.py``, then call its handler twice.

``python bench/_coldprobe.py <main.py> <requests.json>`` prints one JSON line:
``{"import": s, "first": s, "second": s, "status": [code, code]}``. The requests file
holds two requests ``{"method", "path", "headers", "body"}`` (the second a different
student or event, so neither is a repeat). Run as a script, not ``-m``: nothing of the
bench is imported before the clock starts, only the standard library's ``time``.
The handler is called directly with a Starlette ``Request`` (no server), so "first"
is the function's own first-request work: building its clients (Redis, Kafka), the
JWT check, the first Redis calls and the first access-audit produce.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time


def main() -> None:
    started = time.perf_counter()
    path = sys.argv[1]
    sys.path.insert(0, os.path.dirname(path))  # as functions-framework's loader does
    spec = importlib.util.spec_from_file_location("main", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["main"] = module
    spec.loader.exec_module(module)
    imported = time.perf_counter() - started

    import asyncio
    import json

    from starlette.requests import Request

    with open(sys.argv[2]) as f:
        requests = json.load(f)

    async def call(r: dict[str, object]) -> tuple[float, int]:
        body = str(r["body"]).encode("latin-1")
        sent = False

        async def receive() -> dict[str, object]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        headers = dict(r["headers"])  # type: ignore[call-overload]
        scope = {
            "type": "http",
            "http_version": "1.1",
            "method": r["method"],
            "path": r["path"],
            "raw_path": str(r["path"]).encode(),
            "root_path": "",
            "scheme": "http",
            "query_string": b"",
            "headers": [(k.lower().encode(), str(v).encode()) for k, v in headers.items()],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8080),
        }
        t = time.perf_counter()
        response = await module.handler(Request(scope, receive))
        return time.perf_counter() - t, int(response.status_code)

    async def both() -> list[tuple[float, int]]:
        return [await call(r) for r in requests]

    (first, s1), (second, s2) = asyncio.run(both())
    print(json.dumps({"import": imported, "first": first, "second": second, "status": [s1, s2]}))
    sys.stdout.flush()
    os._exit(0)  # the function's clients (a Kafka producer thread) are not closed: not measured


if __name__ == "__main__":
    main()
