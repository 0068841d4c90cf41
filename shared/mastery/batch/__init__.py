"""Batch runs: many students' mastery at once, synchronously or through a priority queue."""

from mastery.batch.evaluate import Result, error_result, evaluate, tally
from mastery.batch.messages import batch_message, decode_batch
from mastery.batch.runner import BatchRunner, RunOutcome

__all__ = [
    "BatchRunner",
    "Result",
    "RunOutcome",
    "batch_message",
    "decode_batch",
    "error_result",
    "evaluate",
    "tally",
]
