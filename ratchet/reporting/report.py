"""The run report: one self-contained HTML page a person would rather read than the JSON it is built from.

Written by the audit stage (`--report reports/report.html`) from what the run left:
the gate verdicts (every metric of every model with its bootstrap interval, every
rule with its decision), the training curves (reports/train/<stage>/, DVCLive's), prepare's
manifest (the data funnel of every drop: records in, kept, redacted, and what
each rule quarantined) and the audit log, which holds every cycle's gate results
and promotion or refusal, so the page follows each metric across cycles.

Figures are drawn with matplotlib as inline SVG (text kept as text) and the page
is a jinja2 template: no script, no network, opens from disk years later.
"""
from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import jinja2

from ratchet.core import audit_log
from ratchet.core.history import read_history
from ratchet.core.io import dir_size, read_json, write_text
from ratchet.eval import promote, scores
from ratchet.reporting import facts

ORDER = ("base", "champion", "shipped", "dapt", "sft", "student", "onnx")  # pipeline order; references first
COLOURS = {"pass": "#2e7d32", "fail": "#c62828", "reference": "#757575", None: "#757575"}
TEMPLATE = Path(__file__).parent / "templates" / "report.html.j2"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "ratchet", "font.size": 9,
                                "axes.spines.top": False, "axes.spines.right": False})
    import matplotlib.pyplot as plt

    return plt


def svg(fig) -> str:
    """The figure as an inline <svg> element (no XML prolog, no creation date: the same data draws the same bytes)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    _pyplot().close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def ordered(names) -> list[str]:
    return sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


def _grid(plt, n: int, ncols: int = 3, width: float = 3.4, height: float = 2.3):
    rows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(rows, ncols, figsize=(width * ncols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def metrics_figure(verdicts: dict[str, dict]) -> str | None:
    """One panel per metric: every model's value with its interval, coloured by its gate verdict."""
    names = ordered(verdicts)
    metrics = list(dict.fromkeys(m for n in names for m in verdicts[n].get("metrics", {})))
    if not metrics:
        return None
    plt = _pyplot()
    fig, axes = _grid(plt, len(metrics))
    for ax, metric in zip(axes, metrics):
        rows = [(i, n, verdicts[n]) for i, n in enumerate(names) if metric in verdicts[n].get("metrics", {})]
        for i, _, v in rows:
            x = v["metrics"][metric]
            low, high = v.get("intervals", {}).get(metric, (x, x))
            ax.errorbar([x], [i], xerr=[[max(x - low, 0)], [max(high - x, 0)]], fmt="o", ms=4, capsize=3,
                        color=COLOURS.get(v.get("verdict"), COLOURS[None]))
        ax.set_yticks([i for i, _, _ in rows], [n for _, n, _ in rows])
        ax.set_ylim(len(names) - 0.5, -0.5)
        m = scores.METRICS.get(metric)
        ax.set_title(f"{metric} ({'higher' if m and m.higher_is_better else 'lower'} is better)", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return svg(fig)


def curves_figure(curves: dict[str, list[dict]]) -> str | None:
    """Every training stage's loss (and its parts) per optimizer step, the learning rate on a second axis."""
    curves = {stage: rows for stage, rows in curves.items() if rows}
    if not curves:
        return None
    plt = _pyplot()
    fig, axes = _grid(plt, len(curves), width=3.8, height=2.6)
    for ax, (stage, rows) in zip(axes, curves.items()):
        steps = [r["step"] for r in rows]
        series = [k for k in rows[0] if k not in ("step", "lr", "grad_norm")]
        for key in series:
            ax.plot(steps, [r.get(key) for r in rows], label=key, lw=1.2 if key == "loss" else 0.8)
        ax.set_title(stage, fontsize=9)
        ax.set_xlabel("step")
        ax.legend(fontsize=7, frameon=False)
        if "lr" in rows[0]:
            lr = ax.twinx()
            lr.plot(steps, [r["lr"] for r in rows], color="#9e9e9e", ls=":", lw=0.8)
            lr.set_ylabel("learning rate", color="#9e9e9e", fontsize=7)
            lr.tick_params(labelsize=7, colors="#9e9e9e")
            lr.spines["right"].set_visible(True)
    fig.tight_layout()
    return svg(fig)


def funnel(manifest: dict) -> list[dict]:
    """Per drop: records in, kept, redacted, and each quarantining rule with its count (in filter order)."""
    rows = []
    for drop, a in manifest.get("drops", {}).items():
        rules = {r: n for r, n in a.get("rules", {}).items() if n}
        rows.append({"drop": drop, "in": a["in"], "kept": a["kept"], "redacted": a["redacted"],
                     "quarantined": a["quarantined"], "rules": rules, "splits": a.get("splits", {})})
    return rows


def funnel_figure(rows: list[dict]) -> str | None:
    if not rows:
        return None
    plt = _pyplot()
    rules = list(dict.fromkeys(r for row in rows for r in row["rules"]))
    fig, ax = plt.subplots(figsize=(9, 1.4 + 0.4 * len(rows)))
    reds = plt.get_cmap("Reds")
    parts = [("kept", "#2e7d32"), ("redacted", "#f9a825")] + [
        (r, reds(0.35 + 0.5 * i / max(len(rules) - 1, 1))) for i, r in enumerate(rules)]
    left = [0] * len(rows)
    for name, colour in parts:
        width = [row[name] if name in ("kept", "redacted") else row["rules"].get(name, 0) for row in rows]
        ax.barh(range(len(rows)), width, left=left, color=colour, label=name if name in ("kept", "redacted")
                else f"quarantined: {name}")
        left = [a + b for a, b in zip(left, width)]
    ax.set_yticks(range(len(rows)), [row["drop"] for row in rows])
    ax.invert_yaxis()
    ax.set_xlabel("records")
    ax.legend(fontsize=7, frameon=False, ncol=4, loc="lower center", bbox_to_anchor=(0.5, 1.02))  # clear of the axis
    fig.tight_layout()
    return svg(fig)


def cycles(entries: list[dict]) -> list[dict]:
    """The audit log as cycles: each promotion, refusal or hold with the data gate and the last gate of every model
    before it. A run asked about again (the same run_id, no new gate) stays one cycle; gates after the last
    decision are this run's, not yet decided."""
    out, gates, data = [], {}, None
    for e in entries:
        if e["event"] == "gate":
            gates[e["model"]] = e
        elif e["event"] == "data_gate":
            data = e
        elif e["event"] in ("promotion", "refusal", "hold"):
            if out and not gates and out[-1]["run_id"] == e.get("run_id"):
                out[-1].update(outcome=e["event"], seq=e["seq"], time_utc=e["time_utc"], reasons=e.get("reasons"))
                continue
            out.append({"run_id": e.get("run_id"), "outcome": e["event"], "week": e.get("week"),
                        "cycle": e.get("cycle"), "seq": e["seq"], "time_utc": e["time_utc"],
                        "reasons": e.get("reasons"), "gates": gates, "data": data})
            gates = {}
    if gates:
        out.append({"run_id": None, "outcome": "undecided", "week": None, "cycle": None,
                    "seq": max(g["seq"] for g in gates.values()), "time_utc": max(g["time_utc"] for g in gates.values()),
                    "reasons": None, "gates": gates, "data": data})
    for i, c in enumerate(out, 1):
        c["label"] = f"#{i}" + (f" {c['week']}" if c["week"] else "")
    return out


def cycles_figure(history: list[dict], models=("sft", "onnx")) -> str | None:
    """Each metric of the teacher and the shipped candidate across cycles, with intervals where the log has them;
    a filled marker where the gate passed, an open one where it failed."""
    metrics = list(dict.fromkeys(m for c in history for n in models for m in c["gates"].get(n, {}).get("metrics", {})))
    if len(history) < 2 or not metrics:
        return None
    plt = _pyplot()
    fig, axes = _grid(plt, len(metrics))
    xs = range(len(history))
    for ax, metric in zip(axes, metrics):
        for k, name in enumerate(models):
            colour = ("#1565c0", "#ef6c00")[k % 2]
            pts = [(x, c["gates"][name]) for x, c in zip(xs, history) if metric in c["gates"].get(name, {}).get("metrics", {})]
            if not pts:
                continue
            ys = [g["metrics"][metric] for _, g in pts]
            ax.plot([x for x, _ in pts], ys, color=colour, lw=0.8, label=name)
            for (x, g), y in zip(pts, ys):
                low, high = g.get("intervals", {}).get(metric, (y, y))
                ax.errorbar([x], [y], yerr=[[max(y - low, 0)], [max(high - y, 0)]], fmt="o", ms=4, capsize=2,
                            color=colour, mfc=colour if g["verdict"] == "pass" else "white")
        for x, c in zip(xs, history):
            if c["outcome"] == "promotion":
                ax.axvspan(x - 0.4, x + 0.4, color="#c8e6c9", alpha=0.5, lw=0)
        ax.set_xticks(list(xs), [c["label"] for c in history], fontsize=7, rotation=30)
        ax.set_title(metric, fontsize=9)
        ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return svg(fig)


def model_rows(verdicts: dict[str, dict], stale=()) -> list[dict]:
    """Per verdict: the model folder's stage, training time and size (from its lineage.json), the gate's time,
    verdict and unresolved rules, and its answers to the held-out questions."""
    rows = []
    for n, v in verdicts.items():
        folder = Path(v["path"])
        lin = read_json(folder / "lineage.json") if (folder / "lineage.json").is_file() else {}
        rows.append({"model": n, "path": v["path"], "stage": lin.get("stage"), "wall_time_s": lin.get("wall_time_s"),
                     "size_mb": round(dir_size(folder) / 1e6, 1) if folder.is_dir() else None,
                     "gate_s": v.get("wall_time_s"), "time_utc": v.get("time_utc"), "verdict": v.get("verdict"),
                     "stale": n in stale, "unresolved": v.get("unresolved", []),
                     "answers": {r["id"]: r["answer"] for task in ("ratchet_answers", "ratchet_knowledge_answers")
                                 for r in v.get("scores", {}).get(task, [])}})
    return rows


def build(verdicts: dict[str, dict], curves: dict[str, list[dict]], manifest: dict, entries: list[dict], *,
          quantize: dict | None = None, stale=(), run: dict | None = None) -> str:
    """The report page for one run, with every earlier cycle the audit log remembers. `stale` names the
    verdicts a gate did not rewrite in this run (an earlier gate stopped it): shown, and marked as such."""
    names = ordered(verdicts)
    verdicts = {n: verdicts[n] for n in names}
    history = cycles(entries)
    drops = funnel(manifest)
    fresh = {n: v for n, v in verdicts.items() if n not in stale}
    questions = next((v["answers"] for v in fresh.values() if v.get("answers")), [])
    env = jinja2.Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters["num"] = lambda x, digits=4: "-" if x is None or x != x else f"{x + 0.0:.{digits}g}"  # no "-0"
    return env.from_string(TEMPLATE.read_text()).render(
        real=all(v.get("real") for v in verdicts.values()), verdicts=verdicts, models=model_rows(verdicts, stale),
        gated=[n for n in names if v_has_rules(verdicts[n])], stale=[n for n in names if n in stale],
        failing=[n for n in names if verdicts[n].get("verdict") == "fail" and n not in stale],
        holding=[n for n in names if verdicts[n].get("verdict") == "hold" and n not in stale],
        colours=COLOURS, figures={"metrics": metrics_figure(fresh), "curves": curves_figure(curves),
                                  "funnel": funnel_figure(drops), "cycles": cycles_figure(history)},
        drops=drops, cycles=history, metrics=list(dict.fromkeys(m for v in verdicts.values() for m in v["metrics"])),
        questions=questions, quantize=quantize, audit_entries=len(entries), bits=weights(run),
        data_gate=next((e["verdict"] for e in reversed(entries) if e["event"] == "data_gate"), None),
        about={m: scores.METRICS[m].about for m in scores.METRICS})


def weights(run: dict | None) -> str:
    """The shipped model's weight format as its lineage records it (facts.run)."""
    bits = ((run or {}).get("quantize") or {}).get("weight_bits")
    return f"int{bits}" if bits is not None else "quantized (bits not recorded)"


def v_has_rules(v: dict) -> bool:
    return v.get("verdict") in ("pass", "fail")


def write(lay, stale=()) -> Path | None:
    """The report from whatever the last run left in a workspace laid out as `lay` (promote.layout), for
    `ratchet report` and after every promotion or refusal: a refused run never reaches the audit stage, and this
    is the page that shows why. `stale`: promote.stale_verdicts."""
    if lay.report is None:
        return None
    verdicts = {n: read_json(p) for n, p in lay.verdicts.items() if p.is_file()}
    write_text(lay.report, build(
        verdicts, {p.name: read_history(p) for p in lay.curves},
        read_json(lay.manifest) if lay.manifest.is_file() else {},
        audit_log.entries(lay.audit_log) if lay.audit_log.is_file() else [],
        quantize=read_json(lay.quantize) if lay.quantize and lay.quantize.is_file() else None, stale=stale,
        run=facts.run({"onnx": read_json(lay.onnx / "lineage.json")} if (lay.onnx / "lineage.json").is_file() else {})))
    return lay.report


def write_run_report(root: Path, out: Path | None = None) -> Path | None:
    """The HTML run report of the run in the workspace, its stale verdicts marked (committed with the outcome)."""
    lay = promote.layout(root)
    if out is not None:
        lay = dataclasses.replace(lay, report=out)
    return write(lay, promote.stale_verdicts(root, lay))
