"""The run summary: every model's verdict, what each step gained and what it forgot (the audit stage).
"""
from __future__ import annotations

from ratchet.core.io import one_line

FORGETTING = (("general_ppl", "ratio"), ("general_mc_acc", "diff"), ("answer_chrf", "diff"))


def forgetting(s: dict) -> list[str]:
    """What each model kept of what it knew: general text, general knowledge and answers against the untuned base
    and the champion, and every source's domain text against the champion (backward transfer)."""
    refs = {name: s[name] for name in ("base", "champion") if name in s}
    sources = sorted(s["champion"].get("by_source", {}))
    cols = [(m, kind, ref) for m, kind in FORGETTING for ref in refs if m in refs[ref]["metrics"]]
    rows = [r for r in s["models"] if r["stage"] and r["metrics"]]
    if not cols or not rows:
        return []

    def cell(value, ref, kind):
        if value is None or ref is None:
            return "-"
        return f"{value / ref:.3f}x" if kind == "ratio" else f"{value - ref:+.3f}"
    out = ["", "What each model kept (perplexity as a ratio to the reference, above 1 is worse; accuracy and chrF as "
           "a difference, below 0 is worse; domain text per source against the champion: backward transfer):", "",
           "| model | " + " | ".join(f"{m} vs {ref}" for m, _, ref in cols)
           + "".join(f" | domain[{src}] vs champion" for src in sources) + " |",
           "|---|" + "---:|" * (len(cols) + len(sources))]
    for r in rows:
        out.append(f"| {r['model']} | " + " | ".join(cell(r["metrics"].get(m), refs[ref]["metrics"].get(m), kind)
                                                   for m, kind, ref in cols)
                   + "".join(f" | {cell(r['by_source'].get(src), s['champion']['by_source'][src], 'ratio')}"
                             for src in sources) + " |")
    return out


def render(s: dict) -> str:
    lines = ["# Run summary", ""]
    if not s["real"]:
        lines += ["**Tiny test model: these numbers are not real results.**", ""]
    c = s["champion"]["metrics"]
    sh = s["shipped"]["metrics"]
    lines += [f"References: the champion's teacher (`{s['champion']['path']}`): domain perplexity "
              f"{c['domain_ppl']:.2f}, general perplexity {c['general_ppl']:.2f}; the shipped model it replaces "
              f"(`{s['shipped']['path']}`): domain {sh['domain_ppl']:.2f}, general {sh['general_ppl']:.2f}.", "",
              "| model | stage | wall time (s) | size (MB) | domain ppl | general ppl | gate |",
              "|---|---|---:|---:|---:|---:|---|"]
    for r in s["models"]:
        m = r["metrics"]
        lines.append(f"| {r['model']} | {r['stage']} | {r['wall_time_s']} | {r['size_mb']} | "
                     f"{m.get('domain_ppl', float('nan')):.2f} | {m.get('general_ppl', float('nan')):.2f} | "
                     f"{r['verdict'] or '-'} |")
    sources = sorted({src for r in s["models"] for src in r.get("by_source", {})})
    if len(sources) > 1:  # backward transfer: every source's held-out text on its own
        lines += ["", "Domain perplexity per source's held-out text:", "",
                  "| model | " + " | ".join(sources) + " |", "|---|" + "---:|" * len(sources)]
        lines += [f"| {r['model']} | " + " | ".join(f"{r['by_source'][src]:.2f}" if src in r["by_source"] else "-"
                                                  for src in sources) + " |" for r in s["models"] if r["by_source"]]
    times = {name: t for name, t in s.get("gate_time_s", {}).items() if t is not None}
    if times:
        lines += ["", f"Gate time: {sum(times.values()):.0f} s in all ("
                  + ", ".join(f"{name} {t:.0f} s" for name, t in times.items()) + ")."]
    lines += forgetting(s)
    flagged = [(r["model"], rule) for r in s["models"] for rule in r.get("unresolved", [])]
    if flagged:
        lines += ["", "Rules decided inside the noise (the interval spans the limit; more held-out documents "
                  "would resolve them):", ""] + [f"- {model}: {rule}" for model, rule in flagged]
    metrics = [m for m in dict.fromkeys(k for r in s["models"] for k in r["metrics"]) if m not in ("domain_ppl", "general_ppl")]
    if metrics:
        lines += ["", "Every other gate metric (`reports/gates/<model>.md` has each rule with its interval):", "",
                  "| model | " + " | ".join(metrics) + " |", "|---|" + "---:|" * len(metrics)]
        lines += [f"| {r['model']} | " + " | ".join(f"{r['metrics'][m]:.3f}" if m in r["metrics"] else "-"
                                                  for m in metrics) + " |" for r in s["models"]]
    for q in s.get("questions", []):
        lines += ["", f"**{q['question']}** (held-out; reference: {one_line(q['reference'])})", ""]
        lines += [f"- {r['model']}: {one_line(r['answers'][q['id']])}" for r in s["models"] if q["id"] in r["answers"]]
    q = s["quantize"]
    lines += ["", f"int8 ONNX parity with the PyTorch student: top-1 agreement {q['top1_agreement']:.3f}, "
                  f"NLL {q['nll_torch']:.3f} -> {q['nll_onnx']:.3f} nats/token; "
                  f"{q['fp32_mb']:.0f} MB fp32 -> {q['int8_mb']:.0f} MB int8.",
              "", f"Sample from the int8 model: {q['sample']!r}", "",
              f"Data gate: {s['data_gate']}. Audit log: {s['audit_log_entries']} entries, chain intact: "
              f"{'no' if s['problems'] else 'yes'}.", ""]
    return "\n".join(lines)
