"""A logging filter that masks secrets (tokens, session keys) in log records.

Shared by the broker adapters and the feeds: a secret registered with :meth:`SecretFilter.add`
is replaced by ``***`` wherever it appears in a record's message, and ``pattern`` (a regex
whose first group is kept) masks values that follow a known key, such as ``token=`` in a URL.
"""

from __future__ import annotations

import logging
import re
import threading

__all__ = ["SecretFilter"]


class SecretFilter(logging.Filter):
    """Masks registered secret values (and ``pattern`` matches) in the records it filters."""

    pattern: re.Pattern[str] | None = None

    def __init__(self) -> None:
        super().__init__("")
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def add(self, *values: str | None) -> None:
        """Register secrets to mask (values shorter than four characters are ignored)."""
        with self._lock:
            self._secrets.update(v for v in values if v and len(v) >= 4)

    def scrub(self, text: str) -> str:
        for secret in tuple(self._secrets):
            text = text.replace(secret, "***")
        return self.pattern.sub(r"\1***", text) if self.pattern is not None else text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets and self.pattern is None:
            return True
        try:
            text = record.getMessage()
        except Exception:  # a malformed record: drop it rather than risk printing its args
            return False
        clean = self.scrub(text)
        if clean != text:
            record.msg, record.args = clean, None
        return True
