"""The Lua scripts of the store, loaded once per process and called by SHA."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from importlib.resources import files

__all__ = ["APPLY", "COMPARE", "ERASE", "SCORES", "Script"]


@dataclass(frozen=True, slots=True)
class Script:
    source: str
    #: Its SHA1, as EVALSHA names it: hashed once (apply.lua is ~15 KB and runs per batch).
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


def _with_cohort(name: str) -> Script:
    """A script of this package, after the cohort index helpers it shares."""
    folder = files("mastery.store")
    return Script(folder.joinpath("cohort.lua").read_text() + folder.joinpath(name).read_text())


APPLY, ERASE, COMPARE = (
    _with_cohort("apply.lua"),
    _with_cohort("erase.lua"),
    _with_cohort("compare.lua"),
)
SCORES = Script(files("mastery.store").joinpath("scores.lua").read_text())
