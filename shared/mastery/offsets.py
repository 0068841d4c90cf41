"""What a consumer knows of the applied offsets it keeps in Redis (see ``offsets.lua``).

Each tenant's hash records, per partition ("<topic>:<partition>"), the next offset from
which that tenant's events may not all be applied, written by the call that applies
them. The consumer resumes a partition at the lowest offset any tenant records for it
(``resume_at``), so after a Redis failover that lost writes it re-reads exactly what
was lost. Every write names the value the consumer last saw (``marks``): a different
stored value means the offsets moved under it, and it re-reads them instead.

A tenant's first events in a partition are preceded by an entry in the catch-all
(``newcomers``: "<topic>:<partition>:<tenant>" -> the batch's first offset there): if a
failover loses the tenant's first write, no field of theirs is left to resume from, and
the entry stands in for it (``resume_at``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["CATCH_ALL", "OffsetBook", "partition_field"]

#: The pseudo-tenant every batch's offsets are written to, whatever its events: it keeps a
#: partition whose records were all dead-lettered (or held no tenant yet) from being
#: re-read from its start.
CATCH_ALL = "_"


def partition_field(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


class OffsetBook:
    """(tenant, partition field) -> the applied offset last written or read, for one group."""

    def __init__(self, group: str, known: Mapping[tuple[str, str], int] | None = None) -> None:
        self.group = group
        self._known: dict[tuple[str, str], int] = dict(known or {})

    def marks(self, tenant: str, ends: Mapping[str, int]) -> list[list[str]]:
        """What ``offsets.lua`` checks and writes for ``tenant`` after a batch: field,
        the value this book expects there ('' = none), the batch's end."""
        return [[f, _text(self._known.get((tenant, f))), str(end)] for f, end in ends.items()]

    def newcomers(self, firsts: Mapping[str, Mapping[str, int]]) -> dict[str, int]:
        """The catch-all entries to write before a batch applies: ``firsts`` maps each
        tenant of the batch to its partition fields' first offsets in it; a tenant with
        neither an applied offset nor an entry for a field is new there."""
        entries = {}
        for tenant, fields in firsts.items():
            for f, offset in fields.items():
                entry = _entry(f, tenant)
                if (tenant, f) not in self._known and (CATCH_ALL, entry) not in self._known:
                    entries[entry] = offset
        return entries

    def wrote(self, tenant: str, ends: Mapping[str, int]) -> None:
        self._known.update({(tenant, f): end for f, end in ends.items()})

    def replace(self, known: Mapping[tuple[str, str], int]) -> None:
        self._known = dict(known)

    def tenants(self) -> set[str]:
        return {t for t, _ in self._known}

    def ends_of(self, tenant: str) -> dict[str, int]:
        return {f: o for (t, f), o in self._known.items() if t == tenant}

    def resume_at(self, fields: Iterable[str]) -> dict[str, int | None]:
        """Per partition field, the lowest applied offset of any tenant, or the first
        offset of a tenant entered as new there whose own offset is gone (None: none
        known)."""
        lowest: dict[str, int | None] = dict.fromkeys(fields)
        for (tenant, f), offset in self._known.items():
            if tenant == CATCH_ALL and f.count(":") == 2:  # a newcomer's entry
                f, _, newcomer = f.rpartition(":")
                if (newcomer, f) in self._known:
                    continue  # its own offset says more
            if f in lowest:
                current = lowest[f]
                lowest[f] = offset if current is None else min(current, offset)
        return lowest


def _entry(field: str, tenant: str) -> str:
    """A newcomer's entry in the catch-all (topics and tenants hold no ':')."""
    return f"{field}:{tenant}"


def _text(offset: int | None) -> str:
    return "" if offset is None else str(offset)
