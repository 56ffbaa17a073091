"""A gate verdict as Markdown: every rule with its interval and decision, task times, side-by-side answers.
"""
from __future__ import annotations

from ratchet.reporting.render import render as render_template

TEMPLATE = "verdict.md.j2"


def render(v: dict) -> str:
    """The verdict for a person (templates/verdict.md.j2): `v` is the verdict the gate stage writes as JSON."""
    return render_template(TEMPLATE, v=v)
