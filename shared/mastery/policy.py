"""Who may do what to whose data: one table, read by every function.

Pure: no I/O, no web types. ``mastery.web`` turns a refusal into a 403; the registry says
which action each HTTP function performs, so a new function cannot skip the table.
"""

from __future__ import annotations

from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping, Set

__all__ = ["POLICY", "TENANT_WIDE", "Action", "Role", "Scope", "allowed", "may_act", "may_try"]


class Role(StrEnum):
    STUDENT = "student"
    TEACHER = "teacher"
    ADMIN = "admin"


class Action(StrEnum):
    """What a function does with a student's data."""

    READ = "read"  # mastery, predictions, recommendations, history, comparisons
    EXPORT = "export"  # everything held about a student (GDPR access)
    ERASE = "erase"  # delete everything held about a student (GDPR erasure)
    AUDIT = "audit"  # the tenant's audit trail: data accesses and event outcomes
    BATCH = "batch"  # read many students' mastery in one request (reports, bulk runs)
    INGEST = "ingest"  # send learning records (xAPI statements) about the tenant's students


class Scope(StrEnum):
    """Whose data a role reaches; always within the caller's own tenant."""

    NONE = "none"
    SELF = "self"  # the caller's own data
    CLASSES = "classes"  # students sharing a class with the caller's token
    TENANT = "tenant"  # every student of the tenant


POLICY: Mapping[Action, Mapping[Role, Scope]] = MappingProxyType(
    {
        Action.READ: MappingProxyType(
            {Role.STUDENT: Scope.SELF, Role.TEACHER: Scope.CLASSES, Role.ADMIN: Scope.TENANT}
        ),
        Action.EXPORT: MappingProxyType(
            {Role.STUDENT: Scope.SELF, Role.TEACHER: Scope.NONE, Role.ADMIN: Scope.TENANT}
        ),
        Action.ERASE: MappingProxyType(
            {Role.STUDENT: Scope.NONE, Role.TEACHER: Scope.NONE, Role.ADMIN: Scope.TENANT}
        ),
        Action.AUDIT: MappingProxyType(
            {Role.STUDENT: Scope.NONE, Role.TEACHER: Scope.NONE, Role.ADMIN: Scope.TENANT}
        ),
        # Each student of a batch is checked like a single read; a student may not batch.
        Action.BATCH: MappingProxyType(
            {Role.STUDENT: Scope.NONE, Role.TEACHER: Scope.CLASSES, Role.ADMIN: Scope.TENANT}
        ),
        # An LRS or a platform forwarding statements holds an admin (service) token.
        Action.INGEST: MappingProxyType(
            {Role.STUDENT: Scope.NONE, Role.TEACHER: Scope.NONE, Role.ADMIN: Scope.TENANT}
        ),
    }
)

#: Actions on the tenant as a whole: they name no student to check, only a tenant scope
#: reaches them (a student named in such a request only narrows what is shown).
TENANT_WIDE: Set[Action] = frozenset({Action.AUDIT, Action.INGEST})


def may_act(role: Role, action: Action) -> bool:
    """Whether ``role`` may do ``action`` to anyone at all."""
    return POLICY[action][role] is not Scope.NONE


def may_try(role: Role, subject: str, action: Action, student_id: str | None) -> bool:
    """Whether the request may go on to read anything at all (decided before any I/O).

    ``student_id`` is ``None`` for a request about the whole tenant (``TENANT_WIDE``).
    """
    scope = POLICY[action][role]
    if student_id is None or action in TENANT_WIDE:
        return scope is Scope.TENANT
    return scope is not Scope.NONE and (scope is not Scope.SELF or subject == student_id)


def allowed(
    role: Role,
    subject: str,
    classes: Set[str],
    action: Action,
    student_id: str,
    student_classes: Set[str],
) -> bool:
    """The full decision, once the student's classes are known."""
    if not may_try(role, subject, action, student_id):
        return False
    scope = POLICY[action][role]
    return scope is not Scope.CLASSES or bool(classes & student_classes)
