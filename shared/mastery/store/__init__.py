"""Redis adapter: key layout, the atomic apply script, state and history reads."""

from mastery.store.repository import UNKNOWN_TENANT, Outcome, RedisStore, Rejection, StudentDays

__all__ = ["UNKNOWN_TENANT", "Outcome", "RedisStore", "Rejection", "StudentDays"]
