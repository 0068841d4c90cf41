"""``GrowingPages``: the page sizes both audit readers walk back with."""

from __future__ import annotations

from mastery.paging import GrowingPages


def test_pages_grow_fourfold_until_the_budget_caps_them() -> None:
    pages = GrowingPages(256, 2000)
    sizes = []
    while size := pages.next():
        sizes.append(size)
        pages.spent(size)
    assert sizes == [256, 1024, 720]


def test_the_budget_is_shared_among_readers_and_ends_when_each_cannot_get_one() -> None:
    pages = GrowingPages(256, 1000)
    assert pages.next(3) == 256
    pages.spent(3 * 256)
    assert pages.next(3) == 232 // 3
    pages.spent(230)
    assert pages.next(3) == 0  # 2 records left for 3 partitions: incomplete


def test_a_short_read_leaves_the_rest_of_the_budget() -> None:
    pages = GrowingPages(10, 100)
    assert pages.next() == 10
    pages.spent(4)
    assert pages.next() == 40
