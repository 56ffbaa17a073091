"""The data gate's verdict as Markdown.
"""
from __future__ import annotations

from ratchet.reporting.render import render

TEMPLATE = "validation.md.j2"


def markdown(report: dict, data: str) -> str:
    """templates/validation.md.j2 for the validate stage's report; `data`: the prepared folder it checked."""
    return render(TEMPLATE, report=report, data=data)
