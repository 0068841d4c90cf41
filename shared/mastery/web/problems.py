"""RFC 9457 problem details: every error an HTTP function answers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from pydantic import ValidationError
from starlette.responses import Response

from mastery.errors import MasteryError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["PROBLEM_JSON", "Problem", "from_validation"]

PROBLEM_JSON = "application/problem+json"
_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class Problem(MasteryError):
    """An error answer: status, a human ``detail``, optional extension members.

    ``log_fields``: what the request's access line adds, never sent (a 401's
    ``auth_failure``, ``Context.authenticate``).
    """

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        log_fields: Mapping[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}
        self.log_fields = dict(log_fields or {})
        self.extensions = extensions

    @classmethod
    def unavailable(
        cls, detail: str = "a dependency is unavailable, retry later", **extensions: Any
    ) -> Problem:
        """503 with ``Retry-After: 1``: something the answer needs is down for now; the
        same request may succeed in a moment."""
        return cls(503, detail, headers={"Retry-After": "1"}, **extensions)

    def document(self, correlation_id: str | None = None) -> dict[str, Any]:
        """The RFC 9457 body."""
        body: dict[str, Any] = {
            "type": "about:blank",
            "title": _TITLES.get(self.status, "Error"),
            "status": self.status,
            "detail": self.detail,
            **self.extensions,
        }
        if correlation_id:
            body["correlation_id"] = correlation_id
        return body

    def response_headers(self) -> dict[str, str]:
        headers = dict(self.headers)
        if self.status == 401:
            headers.setdefault("WWW-Authenticate", 'Bearer realm="mastery"')
        return headers

    def response(self, correlation_id: str | None = None) -> Response:
        body = self.document(correlation_id)
        headers = self.response_headers()
        if correlation_id:
            headers["X-Correlation-ID"] = correlation_id
        return Response(orjson.dumps(body), self.status, headers, media_type=PROBLEM_JSON)


def from_validation(exc: ValidationError) -> Problem:
    """422 naming every field that failed, without echoing the input back."""
    errors = [
        {"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"]}
        for e in exc.errors(include_input=False, include_url=False)
    ]
    fields = ", ".join(e["field"] for e in errors)
    return Problem(422, f"invalid request body: {fields}", errors=errors)
