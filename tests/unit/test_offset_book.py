"""The consumer's book of applied offsets: where to resume, and who is new where."""

from __future__ import annotations

from mastery.offsets import CATCH_ALL, OffsetBook


def test_resume_at_the_lowest_applied_offset_of_any_tenant() -> None:
    book = OffsetBook("g", {("a", "t:0"): 40, ("b", "t:0"): 25, (CATCH_ALL, "t:0"): 60})
    assert book.resume_at(["t:0", "t:1"]) == {"t:0": 25, "t:1": None}


def test_a_newcomer_is_one_without_an_offset_or_an_entry_there() -> None:
    book = OffsetBook("g", {("a", "t:0"): 40, (CATCH_ALL, "t:1:b"): 12})
    firsts = {"a": {"t:0": 40, "t:1": 41}, "b": {"t:1": 44, "t:2": 45}}
    assert book.newcomers(firsts) == {"t:1:a": 41, "t:2:b": 45}


def test_a_newcomers_entry_stands_in_for_its_lost_offset() -> None:
    """A failover lost tenant b's first write: its field is gone, its entry is not, and
    the partition is read again from where b began, not from a's offset."""
    known = {("a", "t:0"): 90, (CATCH_ALL, "t:0"): 90, (CATCH_ALL, "t:0:b"): 50}
    assert OffsetBook("g", known).resume_at(["t:0"]) == {"t:0": 50}
    # While b's own offset is held, the entry says nothing more.
    assert OffsetBook("g", {**known, ("b", "t:0"): 95}).resume_at(["t:0"]) == {"t:0": 90}
