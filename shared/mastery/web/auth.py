"""JWT (HS256 only) to a verified ``Principal``, and who may read which student."""

from __future__ import annotations

import base64
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import jwt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mastery.fields import ID_PATTERN
from mastery.policy import Action, Role, allowed, may_try
from mastery.ports import utc_now
from mastery.web.problems import Problem

if TYPE_CHECKING:
    from collections.abc import Sequence, Set

    from mastery.ports import Clock

__all__ = [
    "AUTH_FAILURES",
    "BEARER_OR_BASIC",
    "Authenticator",
    "Principal",
    "Role",
    "authorize_student",
    "precheck",
]

#: The challenge of a 401 where HTTP Basic is taken too (one header: a proxy keeping one
#: value of each header keeps both).
BEARER_OR_BASIC = 'Bearer realm="mastery", Basic realm="mastery"'

_Id = Annotated[str, Field(pattern=ID_PATTERN)]

#: Why a token was refused, in a word (a 401's ``auth_failure`` in the access line):
#: the first class the error is an instance of. Bounded, and never the token.
_FAILURES: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "expired"),
    (jwt.ImmatureSignatureError, "not_yet_valid"),
    (jwt.InvalidSignatureError, "bad_signature"),
    (jwt.InvalidAlgorithmError, "wrong_algorithm"),
    (jwt.InvalidAudienceError, "wrong_audience"),
    (jwt.InvalidIssuerError, "wrong_issuer"),
    (jwt.MissingRequiredClaimError, "missing_claim"),
    (jwt.DecodeError, "malformed"),
    (ValidationError, "invalid_claims"),
)
#: Every ``auth_failure``: ``missing`` (no credentials), ``invalid`` (any other refusal).
AUTH_FAILURES = ("missing", *(failure for _, failure in _FAILURES), "invalid")


class _Actor(BaseModel):
    model_config = ConfigDict(extra="ignore")

    sub: _Id


class _Claims(BaseModel):
    model_config = ConfigDict(extra="ignore")

    sub: _Id
    role: Role
    tenant: _Id
    classes: list[_Id] = Field(default_factory=list, max_length=256)
    act: _Actor | None = None  # RFC 8693: the service acting for ``sub``


@dataclass(frozen=True, slots=True)
class Principal:
    """The verified caller. ``tenant`` comes from the token, never from a request body.

    ``actor``: the service that presented a delegated token (its ``act.sub`` claim); the
    request is then authorized as the subject, and audited with both.
    """

    subject: str
    role: Role
    tenant: str
    classes: frozenset[str] = frozenset()
    actor: str | None = None


class Authenticator:
    """Verifies ``Authorization: Bearer <jwt>`` (where asked, also the jwt as the password
    of HTTP Basic credentials): HS256 only, ``exp`` required.

    ``nbf`` and ``iat`` are honoured when present (with the same leeway as ``exp``), all
    three against ``clock``;
    ``iss`` and ``aud`` are required and checked when an issuer / audience is configured.
    During a key rollover several secrets verify: the current one first, then the
    previous ones.

    A verified token is remembered until it expires (keyed by the whole token, signature
    included, so nothing unverified can hit the cache): clients reuse one token for many
    requests, and verifying it was the largest cost of a query.
    """

    def __init__(
        self,
        secrets: str | Sequence[str],
        leeway_s: int = 30,
        cache_size: int = 4096,
        *,
        issuer: str | None = None,
        audience: str | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self._secrets = [secrets] if isinstance(secrets, str) else list(secrets)
        if not self._secrets or not all(self._secrets):
            raise ValueError("at least one non-empty secret is needed")
        self._leeway = leeway_s
        self._clock = clock
        self._issuer = issuer
        self._audience = audience
        self._required = [
            "exp",
            "sub",
            *(["iss"] if issuer else []),
            *(["aud"] if audience else []),
        ]
        self._cache: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        self._cache_size = cache_size

    def authenticate(self, authorization: str | None, *, basic: bool = False) -> Principal:
        """The verified caller of an ``Authorization`` header; 401 problem otherwise.

        ``basic``: also take ``Basic base64(<any user>:<token>)``, the token as password,
        for clients that speak HTTP Basic only (xAPI's: Moodle's logstore_xapi, Ralph).
        The token is verified exactly as a bearer one; a 401 then challenges both.
        """
        try:
            return self._authenticate(_token(authorization, basic=basic))
        except Problem as problem:
            if basic:
                problem.headers["WWW-Authenticate"] = BEARER_OR_BASIC
            raise

    def _authenticate(self, token: str) -> Principal:
        cached = self._cache.get(token)
        if cached is not None and self._clock().timestamp() < cached[1] + self._leeway:
            self._cache.move_to_end(token)
            return cached[0]
        principal, expires = self._verify(token)
        self._cache[token] = (principal, expires)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return principal

    def _verify(self, token: str) -> tuple[Principal, float]:
        try:
            claims = self._decode(token)
            _check_times(claims, self._clock().timestamp(), self._leeway)
            parsed = _Claims.model_validate(claims)
        except (jwt.InvalidTokenError, ValidationError) as exc:
            failure = next((f for kind, f in _FAILURES if isinstance(exc, kind)), "invalid")
            detail = "token expired" if failure == "expired" else "invalid token"
            raise _unauthenticated(detail, failure) from None
        principal = Principal(
            parsed.sub,
            parsed.role,
            parsed.tenant,
            frozenset(parsed.classes),
            parsed.act.sub if parsed.act else None,
        )
        return principal, float(claims["exp"])

    def _decode(self, token: str) -> dict[str, Any]:
        """The verified claims; a bad signature is retried with each older secret."""
        for i, secret in enumerate(self._secrets):
            try:
                claims: dict[str, Any] = jwt.decode(
                    token,
                    secret,
                    algorithms=["HS256"],
                    # The times are checked against our clock (``_check_times``).
                    options={
                        "require": self._required,
                        "verify_exp": False,
                        "verify_nbf": False,
                        "verify_iat": False,
                    },
                    leeway=self._leeway,
                    issuer=self._issuer,
                    audience=self._audience,
                )
            except jwt.InvalidSignatureError:
                if i == len(self._secrets) - 1:
                    raise
                continue
            return claims
        raise AssertionError("unreachable: the loop returns or raises")


def _token(authorization: str | None, *, basic: bool) -> str:
    """The token an ``Authorization`` header carries: a bearer's, or (``basic``) the
    password of HTTP Basic credentials, the user name being anything."""
    scheme, _, credentials = (authorization or "").partition(" ")
    credentials = credentials.strip()
    if credentials and scheme.lower() == "bearer":
        return credentials
    if not basic:
        raise _unauthenticated("missing bearer token", "missing")
    if credentials and scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials, validate=True).decode()
        except ValueError:  # not base64 (binascii.Error), or not UTF-8
            detail = "basic credentials are not base64 of user:password"
            raise _unauthenticated(detail, "malformed") from None
        _, colon, password = decoded.partition(":")
        if colon and password:
            return password
    detail = "missing bearer token, or basic credentials with the token as password"
    raise _unauthenticated(detail, "missing")


def _unauthenticated(detail: str, failure: str) -> Problem:
    """A 401 whose access line says why (``failure``, one of ``AUTH_FAILURES``)."""
    return Problem(401, detail, log_fields={"auth_failure": failure})


def _check_times(claims: dict[str, Any], now: float, leeway: float) -> None:
    """``exp``, ``nbf`` and ``iat`` as PyJWT checks them, but at ``now``.

    Raises:
        jwt.ExpiredSignatureError: ``exp`` is ``leeway`` seconds or more in the past.
        jwt.InvalidTokenError: a time is not a number (RFC 7519's NumericDate: not a string,
            nor a boolean), or ``nbf``/``iat`` is in the future.
    """
    times = {}
    for claim in ("exp", "nbf", "iat"):
        if claim in claims:
            value = claims[claim]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise jwt.DecodeError(f"{claim} must be a number")
            try:
                times[claim] = float(value)  # an int past a float's range: OverflowError
            except OverflowError:
                raise jwt.DecodeError(f"{claim} must be a number of seconds") from None
            if not math.isfinite(times[claim]):
                raise jwt.DecodeError(f"{claim} must be a number of seconds")
    if "iat" in times and times["iat"] > now + leeway:
        raise jwt.ImmatureSignatureError("the token is not yet valid (iat)")
    if "nbf" in times and times["nbf"] > now + leeway:
        raise jwt.ImmatureSignatureError("the token is not yet valid (nbf)")
    if "exp" in times and times["exp"] <= now - leeway:
        raise jwt.ExpiredSignatureError("the token has expired")


def precheck(principal: Principal, action: Action, student_id: str | None = None) -> None:
    """403 before any data is read when no answer could be allowed (``mastery.policy``).

    Without ``student_id`` the request is about the caller's whole tenant.
    """
    if not may_try(principal.role, principal.subject, action, student_id):
        whose = "the tenant's" if student_id is None else "this student's"
        raise Problem(403, f"a {principal.role} may not {action} {whose} data")


def authorize_student(
    principal: Principal, student_id: str, student_classes: Set[str], action: Action = Action.READ
) -> None:
    """403 unless the policy lets ``principal`` do ``action`` to ``student_id`` (same tenant)."""
    p = principal
    if not allowed(p.role, p.subject, p.classes, action, student_id, student_classes):
        raise Problem(403, f"a {p.role} may not {action} this student's data")
