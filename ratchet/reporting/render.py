"""The one jinja2 environment of the documents: a module gathers the facts, its template in templates/ words them.

A module names the template it renders in a TEMPLATE constant, which is how the
consistency test finds the templates a stage depends on.
"""
from __future__ import annotations

from pathlib import Path

import jinja2

from ratchet.core.io import one_line

TEMPLATES = Path(__file__).parent / "templates"
NOT_RECORDED = "not recorded"


def g4(x) -> str:
    """Four significant digits, "-" for a missing value or NaN."""
    return "-" if x is None or x != x else f"{x:.4g}"


def cell(v) -> str:
    """A Markdown table cell: floats to four significant digits, nothing as "-", one line, pipes escaped."""
    text = f"{v:.4g}" if isinstance(v, float) else "-" if v is None else str(v)
    return text.replace("|", "\\|").replace("\n", " ")


def fmt(value, spec: str) -> str:
    """Python's format(value, spec), "-" for a missing value."""
    return "-" if value is None else format(value, spec)


def environment(autoescape: bool = False) -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=autoescape, trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    env.filters.update(g4=g4, cell=cell, fmt=fmt, one_line=one_line, pyrepr=repr)
    env.globals["NOT_RECORDED"] = NOT_RECORDED
    return env


def render(template: str, **facts) -> str:
    return environment(autoescape=template.endswith(".html.j2")).get_template(template).render(**facts)
