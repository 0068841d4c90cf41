"""Bearer JWTs to a ``Principal`` (HS256 only, ``exp`` required) and who may read whom."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import jwt
import orjson
import pytest

from mastery.web.auth import AUTH_FAILURES, Authenticator, Principal, Role, authorize_student
from mastery.web.problems import Problem
from tests.fakes import FakeClock

if TYPE_CHECKING:
    from collections.abc import Callable

# 64 bytes: long enough for HS512 too, so PyJWT does not warn when signing the forged ones.
_SECRET = "unit-test-secret-" + "x" * 47
_LEEWAY_S = 30
_AUTH = Authenticator(_SECRET, leeway_s=_LEEWAY_S)


def _claims(**changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "sub": "teacher-1",
        "role": "teacher",
        "tenant": "school-1",
        "classes": ["c1", "c2"],
        "exp": int(time.time()) + 300,
    }
    claims |= changes
    return {k: v for k, v in claims.items() if v is not None}


def _token(claims: dict[str, Any] | None = None, key: str = _SECRET, alg: str = "HS256") -> str:
    return jwt.encode(_claims() if claims is None else claims, key, algorithm=alg)


def _b64(part: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(part)).rstrip(b"=").decode()


def _forged(header: dict[str, Any], signature: str = "") -> str:
    """A token with any header, signed by nobody."""
    return f"{_b64(header)}.{_b64(_claims())}.{signature}"


def _rejected(authorization: str | None) -> Problem:
    with pytest.raises(Problem) as caught:
        _AUTH.authenticate(authorization)
    assert caught.value.status == 401
    return caught.value


# -- authenticate ----------------------------------------------------------------------------


def test_valid_token() -> None:
    principal = _AUTH.authenticate(f"Bearer {_token()}")
    assert principal == Principal("teacher-1", Role.TEACHER, "school-1", frozenset({"c1", "c2"}))


@pytest.mark.parametrize("role", list(Role))
def test_every_role(role: Role) -> None:
    principal = _AUTH.authenticate(f"Bearer {_token(_claims(role=role.value))}")
    assert principal.role is role


def test_classes_default_to_none() -> None:
    principal = _AUTH.authenticate(f"Bearer {_token(_claims(classes=None))}")
    assert principal.classes == frozenset()


def test_a_delegated_token_is_the_subject_acted_for_by_a_service() -> None:
    principal = _AUTH.authenticate(f"Bearer {_token(_claims(act={'sub': 'tutor-bot'}))}")
    assert (principal.subject, principal.role, principal.actor) == (
        "teacher-1",
        Role.TEACHER,
        "tutor-bot",
    )
    assert _AUTH.authenticate(f"Bearer {_token()}").actor is None


def test_scheme_is_case_insensitive() -> None:
    assert _AUTH.authenticate(f"bearer {_token()}").subject == "teacher-1"


def test_expired_within_leeway_is_accepted() -> None:
    token = _token(_claims(exp=int(time.time()) - _LEEWAY_S // 2))
    assert _AUTH.authenticate(f"Bearer {token}").tenant == "school-1"


@pytest.mark.parametrize("authorization", [None, "", "Bearer", "Bearer ", "Basic x", "Token abc"])
def test_no_bearer_token(authorization: str | None) -> None:
    assert "bearer" in _rejected(authorization).detail


def _basic(password: str, user: str = "moodle") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize("user", ["moodle", "", "Ralph LRS"])
def test_basic_credentials_carry_the_token_as_password_where_asked(user: str) -> None:
    token = _token()
    assert _AUTH.authenticate(_basic(token, user), basic=True) == _AUTH.authenticate(
        f"Bearer {token}"
    )
    assert _AUTH.authenticate(f"Bearer {token}", basic=True).subject == "teacher-1"


def test_basic_credentials_are_refused_where_not_asked() -> None:
    problem = _rejected(_basic(_token()))
    assert problem.response().headers["www-authenticate"] == 'Bearer realm="mastery"'


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Basic",
        "Basic !!!!",  # not base64
        "Basic " + base64.b64encode(b"\xff\xfe:x").decode(),  # not UTF-8
        "Basic " + base64.b64encode(b"no colon").decode(),
        _basic(""),  # no password
        _basic("not.a.token"),
        _basic(_token(key="another-secret-" + "y" * 49)),  # signed by someone else
        _basic(_token(_claims(exp=int(time.time()) - 3600))),  # expired
        _basic(_token(_claims(role="root"))),
        "Bearer not.a.token",
    ],
)
def test_every_401_of_a_basic_route_challenges_both_schemes(authorization: str | None) -> None:
    with pytest.raises(Problem) as caught:
        _AUTH.authenticate(authorization, basic=True)
    assert caught.value.status == 401
    challenge = caught.value.response().headers["www-authenticate"]
    assert challenge == 'Bearer realm="mastery", Basic realm="mastery"'


def test_alg_none() -> None:
    _rejected(f"Bearer {_forged({'alg': 'none', 'typ': 'JWT'})}")


@pytest.mark.parametrize("alg", ["HS384", "HS512"])
def test_other_hmac_algorithms(alg: str) -> None:
    _rejected(f"Bearer {_token(alg=alg)}")


def test_rs256() -> None:
    # No `cryptography` in this environment to mint a real RSA signature; the algorithm
    # must be refused before any signature is looked at anyway.
    _rejected(f"Bearer {_forged({'alg': 'RS256', 'typ': 'JWT'}, 'c2lnbmF0dXJl')}")


def test_hs256_header_with_forged_signature() -> None:
    _rejected(f"Bearer {_forged({'alg': 'HS256', 'typ': 'JWT'}, 'c2lnbmF0dXJl')}")


def test_wrong_key() -> None:
    _rejected(f"Bearer {_token(key='another-secret-' + 'y' * 49)}")


def test_tampered_payload() -> None:
    header, _, signature = _token().split(".")
    admin = _b64(_claims(role="admin"))
    _rejected(f"Bearer {header}.{admin}.{signature}")


def test_expired_beyond_leeway() -> None:
    token = _token(_claims(exp=int(time.time()) - _LEEWAY_S - 60))
    assert "expired" in _rejected(f"Bearer {token}").detail


def test_not_yet_valid() -> None:
    token = _token(_claims(nbf=int(time.time()) + _LEEWAY_S + 600))
    _rejected(f"Bearer {token}")


@pytest.mark.parametrize(
    "claims",
    [
        pytest.param(_claims(exp=None), id="no-exp"),
        pytest.param(_claims(sub=None), id="no-sub"),
        pytest.param(_claims(role=None), id="no-role"),
        pytest.param(_claims(role="superuser"), id="unknown-role"),
        pytest.param(_claims(role="ADMIN"), id="role-case"),
        pytest.param(_claims(tenant=None), id="no-tenant"),
        pytest.param(_claims(tenant="a:b"), id="tenant-colon"),
        pytest.param(_claims(tenant="{x}"), id="tenant-braces"),
        pytest.param(_claims(tenant="t" * 65), id="tenant-too-long"),
        pytest.param(_claims(tenant=""), id="tenant-empty"),
        pytest.param(_claims(sub="a:b"), id="sub-pattern"),
        pytest.param(_claims(classes=["ok", "a b"]), id="class-pattern"),
        pytest.param(_claims(classes="c1"), id="classes-not-a-list"),
        pytest.param(_claims(exp="tomorrow"), id="exp-not-a-number"),
        pytest.param(_claims(exp="9999999999"), id="exp-a-string-of-digits"),  # RFC 7519 2
        pytest.param(_claims(exp=True), id="exp-a-boolean"),
        pytest.param(_claims(exp=10**400), id="exp-past-a-float"),  # was a 500
        pytest.param(_claims(nbf=-(10**400)), id="nbf-past-a-float"),
        pytest.param(_claims(nbf="0"), id="nbf-a-string"),
        pytest.param(_claims(act="svc"), id="act-not-an-object"),
        pytest.param(_claims(act={"sub": "a b"}), id="act-sub-pattern"),
    ],
)
def test_invalid_claims(claims: dict[str, Any]) -> None:
    _rejected(f"Bearer {_token(claims)}")


@pytest.mark.parametrize("token", ["abc", "a.b.c", "..", "Bearer x"])
def test_garbage_token(token: str) -> None:
    _rejected(f"Bearer {token}")


@pytest.mark.parametrize(
    ("authorization", "failure"),
    [  # made when the test runs: a token made at collection may expire before it does
        (lambda: None, "missing"),
        (lambda: "Basic czE6cw==", "missing"),
        (lambda: "Bearer a.b.c", "malformed"),
        (lambda: f"Bearer {_token(key='another-secret-' + 'y' * 49)}", "bad_signature"),
        (lambda: f"Bearer {_forged({'alg': 'none', 'typ': 'JWT'})}", "wrong_algorithm"),
        (lambda: f"Bearer {_token(alg='HS512')}", "wrong_algorithm"),
        (lambda: f"Bearer {_token(_claims(exp=int(time.time()) - 3600))}", "expired"),
        (lambda: f"Bearer {_token(_claims(nbf=int(time.time()) + 3600))}", "not_yet_valid"),
        (lambda: f"Bearer {_token(_claims(exp=None))}", "missing_claim"),
        (lambda: f"Bearer {_token(_claims(role='superuser'))}", "invalid_claims"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_a_401_says_why_in_a_word_for_the_access_line(
    authorization: Callable[[], str | None], failure: str
) -> None:
    problem = _rejected(authorization())
    assert problem.log_fields == {"auth_failure": failure}
    assert failure in AUTH_FAILURES
    assert "auth_failure" not in problem.document()  # the caller is told no more than before


def test_a_basic_password_that_is_not_base64_is_malformed() -> None:
    with pytest.raises(Problem) as caught:
        _AUTH.authenticate("Basic !!!", basic=True)
    assert caught.value.log_fields == {"auth_failure": "malformed"}


def test_unauthorized_response_names_the_scheme() -> None:
    response = _rejected(None).response()
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


# -- authorize_student -----------------------------------------------------------------------


def _principal(role: Role, subject: str = "u1", classes: set[str] | None = None) -> Principal:
    return Principal(subject, role, "school-1", frozenset(classes or ()))


def _forbidden(principal: Principal, student: str, student_classes: set[str]) -> None:
    with pytest.raises(Problem) as caught:
        authorize_student(principal, student, student_classes)
    assert caught.value.status == 403


def test_student_reads_themselves() -> None:
    authorize_student(_principal(Role.STUDENT, "s1"), "s1", set())


def test_student_cannot_read_another() -> None:
    _forbidden(_principal(Role.STUDENT, "s1", {"c1"}), "s2", {"c1"})


def test_teacher_reads_a_student_of_their_class() -> None:
    authorize_student(_principal(Role.TEACHER, "t1", {"c1", "c2"}), "s1", {"c2", "c9"})


@pytest.mark.parametrize(
    ("teacher_classes", "student_classes"),
    [({"c1", "c2"}, {"c3"}), ({"c1"}, set()), (set(), {"c1"}), (set(), set())],
)
def test_teacher_cannot_read_outside_their_classes(
    teacher_classes: set[str], student_classes: set[str]
) -> None:
    _forbidden(_principal(Role.TEACHER, "t1", teacher_classes), "s1", student_classes)


def test_teacher_is_not_a_student_of_themselves() -> None:
    _forbidden(_principal(Role.TEACHER, "s1"), "s1", set())


@pytest.mark.parametrize("student_classes", [set(), {"c1"}])
def test_admin_reads_anyone(student_classes: set[str]) -> None:
    authorize_student(_principal(Role.ADMIN), "s1", student_classes)


# -- the cache of verified tokens -------------------------------------------------------------


def test_a_cached_token_still_expires() -> None:
    clock = FakeClock(datetime(2030, 1, 1, tzinfo=UTC))
    auth = Authenticator(_SECRET, leeway_s=0, clock=clock)
    token = _token(_claims(exp=int(clock().timestamp()) + 1))
    assert auth.authenticate(f"Bearer {token}").subject == "teacher-1"
    clock.advance(timedelta(seconds=1))
    with pytest.raises(Problem) as caught:
        auth.authenticate(f"Bearer {token}")
    assert caught.value.status == 401
    assert "expired" in caught.value.detail


def test_every_time_claim_is_checked_against_the_injected_clock() -> None:
    """A token of 2030 is good in 2030 and not before: no claim is read at the host's time."""
    clock = FakeClock(datetime(2030, 1, 1, tzinfo=UTC))
    auth = Authenticator(_SECRET, leeway_s=0, clock=clock)
    at = int(clock().timestamp())
    token = _token(_claims(exp=at + 60, nbf=at, iat=at))
    assert auth.authenticate(f"Bearer {token}").subject == "teacher-1"
    early = Authenticator(_SECRET, leeway_s=0, clock=FakeClock(clock() - timedelta(seconds=1)))
    with pytest.raises(Problem) as caught:
        early.authenticate(f"Bearer {token}")
    assert caught.value.detail == "invalid token"


def test_the_cache_is_bounded_and_keyed_by_the_whole_token() -> None:
    auth = Authenticator(_SECRET, cache_size=2)
    tokens = [_token(_claims(sub=f"s{i}", role="student")) for i in range(3)]
    for t in tokens:
        auth.authenticate(f"Bearer {t}")
    assert len(auth._cache) == 2
    assert tokens[0] not in auth._cache  # least recently used goes first
    head, payload, _ = tokens[1].split(".")
    with pytest.raises(Problem):  # same claims, another signature: verified, refused
        auth.authenticate(f"Bearer {head}.{payload}.{_b64({'x': 1})}")


# -- rollover, issuer, audience, iat ---------------------------------------------------------

_OLD = "previous-secret-" + "y" * 48


def test_rollover_accepts_the_current_and_the_previous_secret_only() -> None:
    auth = Authenticator([_SECRET, _OLD])
    assert auth.authenticate(f"Bearer {_token()}").tenant == "school-1"
    assert auth.authenticate(f"Bearer {_token(key=_OLD)}").tenant == "school-1"
    with pytest.raises(Problem) as caught:
        auth.authenticate(f"Bearer {_token(key='z' * 64)}")
    assert caught.value.status == 401


def test_after_the_rollover_the_previous_secret_is_refused() -> None:
    with pytest.raises(Problem):
        Authenticator(_SECRET).authenticate(f"Bearer {_token(key=_OLD)}")


@pytest.mark.parametrize("secrets", ["", [], [_SECRET, ""]])
def test_an_empty_secret_is_a_configuration_error(secrets: str | list[str]) -> None:
    with pytest.raises(ValueError, match="secret"):
        Authenticator(secrets)


@pytest.mark.parametrize(
    ("claims", "accepted"),
    [
        ({"iss": "https://idp.school", "aud": "mastery"}, True),
        ({"iss": "https://evil.example", "aud": "mastery"}, False),
        ({"iss": "https://idp.school", "aud": "other-api"}, False),
        ({"aud": "mastery"}, False),  # iss missing
        ({"iss": "https://idp.school"}, False),  # aud missing
    ],
)
def test_issuer_and_audience_when_configured(claims: dict[str, Any], accepted: bool) -> None:
    auth = Authenticator(_SECRET, issuer="https://idp.school", audience="mastery")
    authorization = f"Bearer {_token(_claims(**claims))}"
    if accepted:
        assert auth.authenticate(authorization).subject == "teacher-1"
    else:
        with pytest.raises(Problem) as caught:
            auth.authenticate(authorization)
        assert caught.value.status == 401


def test_issued_in_the_future_is_refused() -> None:
    _rejected(f"Bearer {_token(_claims(iat=int(time.time()) + 3600))}")
