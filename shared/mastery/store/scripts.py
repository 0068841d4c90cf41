"""The Lua scripts of the store, loaded once per process and called by SHA."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from importlib.resources import files

__all__ = ["ADVANCE", "APPLY", "CACHE", "COMPARE", "ERASE", "RATE_LIMIT", "SCORES", "Script"]


@dataclass(frozen=True, slots=True)
class Script:
    source: str
    #: Its SHA1, as EVALSHA names it: hashed once (apply.lua is ~15 KB and runs per batch).
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


def _joined(*names: str) -> Script:
    """A script of this package, after the helpers it shares with others (prepended)."""
    folder = files("mastery.store")
    return Script("".join(folder.joinpath(name).read_text() for name in names))


APPLY = _joined("cohort.lua", "offsets.lua", "apply.lua")
ADVANCE = _joined("offsets.lua", "advance.lua")
ERASE = _joined("cohort.lua", "erase.lua")
COMPARE = _joined("cohort.lua", "compare.lua")
SCORES = _joined("scores.lua")
CACHE = _joined("cache.lua")
RATE_LIMIT = _joined("ratelimit.lua")
