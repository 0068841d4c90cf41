"""Structured JSON logs (Powertools Logger), one per process, named after the function."""

from __future__ import annotations

import functools

from aws_lambda_powertools import Logger

__all__ = ["logger"]


@functools.cache
def logger(service: str = "mastery") -> Logger:
    """The process logger; ``LOG_LEVEL`` / ``POWERTOOLS_LOG_LEVEL`` set its level."""
    return Logger(service=service)
