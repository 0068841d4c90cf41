"""Pages that grow, within a budget: how the audit readers walk back from the newest record.

Both audit reads (the event outcomes in Redis, the access records in Kafka) look for a
tenant's newest ``limit`` records among others, newest first: they read a page, then
pages ``GROWTH`` times larger, until they have enough or ``scan_max`` records are read.
"""

from __future__ import annotations

__all__ = ["FIRST_PAGE", "GROWTH", "GrowingPages"]

FIRST_PAGE = 256
GROWTH = 4


class GrowingPages:
    """Page sizes ``first``, x``GROWTH``, ..., never past what is left of ``scan_max``."""

    def __init__(self, first: int, scan_max: int) -> None:
        self._page = first
        self._left = scan_max

    def next(self, readers: int = 1) -> int:
        """The next page's size for each of ``readers``; 0 once the budget cannot give
        each of them one record (the scan is then incomplete)."""
        if self._left < max(1, readers):
            return 0
        page = min(self._page, self._left // max(1, readers))
        self._page = page * GROWTH
        return page

    def spent(self, records: int) -> None:
        """Count ``records`` read against the budget."""
        self._left -= records
