"""Counting of skipped bad inputs, summarised once instead of one warning per sample."""

from __future__ import annotations

import logging
from collections import Counter

log = logging.getLogger(__name__)


class DataIssueError(ValueError):
    """A bad input found while `strict=True` (or a file-level problem that cannot be skipped)."""


class IssueCounter:
    """Records per-sample problems; with `strict=True` the first problem raises instead."""

    def __init__(self, source: str, strict: bool = False) -> None:
        self.source = source
        self.strict = strict
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, str] = {}

    def report(self, reason: str, detail: str) -> None:
        """Count one skipped item; `detail` names the file/record/field for the first example."""
        if self.strict:
            raise DataIssueError(f"{detail}: {reason} (strict mode; set data.strict=false to skip)")
        self.counts[reason] += 1
        self.examples.setdefault(reason, detail)

    def summary(self) -> str:
        parts = [
            f"{reason}: {count} (e.g. {self.examples[reason]})"
            for reason, count in sorted(self.counts.items())
        ]
        return f"{self.source}: skipped bad inputs -> " + "; ".join(parts)

    def log_summary(self) -> None:
        if self.counts:
            log.warning(self.summary())
