"""The run summary: every model's verdict, what each step gained and what it forgot (the audit stage).
"""
from __future__ import annotations

from ratchet.reporting.render import render as render_template

TEMPLATE = "summary.md.j2"

FORGETTING = (("general_ppl", "ratio"), ("general_mc_acc", "diff"), ("answer_chrf", "diff"))


def forgetting(s: dict) -> dict | None:
    """What each model kept of what it knew: general text, general knowledge and answers against the untuned base
    and the champion, and every source's domain text against the champion (backward transfer): the columns,
    the sources and one row of cells per model."""
    refs = {name: s[name] for name in ("base", "champion") if name in s}
    sources = sorted(s["champion"].get("by_source", {}))
    cols = [(m, kind, ref) for m, kind in FORGETTING for ref in refs if m in refs[ref]["metrics"]]
    rows = [r for r in s["models"] if r["stage"] and r["metrics"]]
    if not cols or not rows:
        return None

    def cell(value, ref, kind):
        if value is None or ref is None:
            return "-"
        return f"{value / ref:.3f}x" if kind == "ratio" else f"{value - ref:+.3f}"
    return {"cols": cols, "sources": sources, "rows": [
        [r["model"], *(cell(r["metrics"].get(m), refs[ref]["metrics"].get(m), kind) for m, kind, ref in cols),
         *(cell(r["by_source"].get(src), s["champion"]["by_source"][src], "ratio") for src in sources)]
        for r in rows]}


def render(s: dict, run: dict | None = None) -> str:
    """templates/summary.md.j2 for the audit stage's summary `s`; `run`: facts.run of the run's lineages (the
    shipped model's quantization is worded from it)."""
    return render_template(
        TEMPLATE, s=s, run=run, nan=float("nan"), kept=forgetting(s),
        sources=sorted({src for r in s["models"] for src in r.get("by_source", {})}),
        times={name: t for name, t in s.get("gate_time_s", {}).items() if t is not None},
        flagged=[(r["model"], rule) for r in s["models"] for rule in r.get("unresolved", [])],
        metrics=[m for m in dict.fromkeys(k for r in s["models"] for k in r["metrics"])
                 if m not in ("domain_ppl", "general_ppl")])
