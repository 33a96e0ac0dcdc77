"""Text for results tables, shared by `scarce compare` and the benchmark scripts."""

from __future__ import annotations


def over_seeds(text: str, known: int, seeds: int) -> str:
    """A cell computed over fewer seeds than its row has says over how many, so a partial mean is never read
    as the row's."""
    return text if known == seeds else f"{text} ({known} of {seeds} seeds)"
