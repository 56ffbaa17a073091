"""Measures of plain text that training and scoring share."""
from __future__ import annotations


def repetition(text: str, n: int = 4) -> float:
    """Share of the word n-grams of `text` that repeat an earlier one: 0 for varied text, near 1 for a loop."""
    words = text.split()
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0
