"""Small helpers for the sentences agentloop prints, so that every command counts the same way."""

from __future__ import annotations


def plural(count: int, noun: str, many: str | None = None) -> str:
    """`1 edit`, `2 edits`, `0 edits`; `many` for nouns that do not just take an s (`branches`)."""
    return f"{count} {noun}" if count == 1 else f"{count} {many or noun + 's'}"
