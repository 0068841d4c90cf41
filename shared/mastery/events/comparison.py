"""xAPI statements compared as the specification compares them: a digest of what they say.

xAPI 1.0.3 (Data 2.3.1, "Statement Comparison Requirements"): differences that the
exceptions to statement immutability could cause are ignored, any other difference
counts. So the comparable form leaves out, or puts in one spelling:

- the properties an LRS may assign: ``id`` (the key compared under), ``authority``,
  ``stored``, ``timestamp`` (the engine dates a statement sent without one by the time
  it took it, so two sends of it differ there), ``version``;
- Activity definitions and a Verb's ``display`` (not part of the statement);
- the order of a Group's members;
- the case of what is case-insensitive: UUIDs, an ``mbox``'s domain, ``mbox_sha1sum``;
- what an LRS normalises: a context activity given alone is a list of one, an
  ``objectType`` of ``Agent`` or ``Activity`` where it is the default is absent;
- a number's spelling (``6`` and ``6.0`` are one JSON number); ``null`` is absent, as
  everywhere in the engine (docs/xapi.md).

A SubStatement, whose content the engine does not check, is compared as sent.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import orjson

from mastery.events.xapi import Activity, Agent, Group

if TYPE_CHECKING:
    from mastery.events.xapi import Statement

__all__ = ["DIGEST_SIZE", "comparable", "digest"]

#: Bytes of a statement's digest, as the student's ``xapi`` hash keeps it (apply.lua).
DIGEST_SIZE = 8
_ASSIGNED = frozenset({"id", "authority", "stored", "timestamp", "version"})
_SORTED = orjson.OPT_SORT_KEYS
_CONTEXT_ACTIVITIES = ("parent", "grouping", "category", "other")


def digest(statement: Statement) -> bytes:
    """8 bytes of BLAKE2b over the comparable form: two statements that compare equal
    share it; two that differ share it with a chance of 2^-64."""
    body = orjson.dumps(comparable(statement), option=_SORTED)
    return hashlib.blake2b(body, digest_size=DIGEST_SIZE).digest()


def comparable(statement: Statement) -> dict[str, Any]:
    """What of ``statement`` an LRS compares, in one spelling (JSON-ready)."""
    doc: dict[str, Any] = statement.model_dump(
        mode="json", by_alias=True, exclude_none=True, exclude=set(_ASSIGNED)
    )
    doc["actor"] = _actor(doc["actor"])
    doc["verb"].pop("display", None)
    target = statement.object
    if isinstance(target, Activity):
        doc["object"] = _activity(doc["object"])
    elif isinstance(target, Agent | Group):
        doc["object"] = _actor(doc["object"])
    if (context := doc.get("context")) is not None:
        for role in ("instructor", "team"):
            if role in context:
                context[role] = _actor(context[role])
        activities = context.get("contextActivities", {})
        for kind in _CONTEXT_ACTIVITIES:
            if kind in activities:
                given = activities[kind]
                listed = given if isinstance(given, list) else [given]
                activities[kind] = [_activity(a) for a in listed]
    normal: dict[str, Any] = _numbers(doc)
    return normal


def _actor(actor: dict[str, Any]) -> dict[str, Any]:
    if actor.get("objectType") == "Agent":
        del actor["objectType"]
    if "mbox" in actor:
        local, _, domain = actor["mbox"].rpartition("@")
        actor["mbox"] = f"{local}@{domain.lower()}"
    if "mbox_sha1sum" in actor:
        actor["mbox_sha1sum"] = actor["mbox_sha1sum"].lower()
    if "member" in actor:
        members = [_actor(m) for m in actor["member"]]
        actor["member"] = sorted(members, key=lambda m: orjson.dumps(m, option=_SORTED))
    return actor


def _activity(activity: dict[str, Any]) -> dict[str, Any]:
    activity.pop("definition", None)
    if activity.get("objectType") == "Activity":
        del activity["objectType"]
    return activity


def _numbers(node: Any) -> Any:
    """``node`` with every integer as a float (JSON has one kind of number, a double in
    practice: RFC 8259 section 6). Not the other way: ``1e308`` as an integer is one no
    JSON writer takes."""
    if isinstance(node, dict):
        return {k: _numbers(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_numbers(v) for v in node]
    if isinstance(node, int) and not isinstance(node, bool):
        return float(node)
    return node
