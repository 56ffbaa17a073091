"""audit: check the lineage of every artifact and write the run summary.

    python -m stages audit --models models/base models/dapt models/sft models/student models/onnx \
        --verdicts reports/gates/{champion,shipped,dapt,sft,student,onnx}.json --data-gate reports/data/validation.json \
        --quantize reports/quantize.json --audit-log reports/audit/log.jsonl \
        --out reports/summary.json --markdown reports/summary.md \
        --report reports/report.html --curves reports/train/{dapt,sft,distill}.json

For every model folder: its lineage.json exists, its recorded content hash
matches the folder, and each parent it names still has the hash recorded. The
audit log's hash chain must be intact. Any mismatch fails the stage. The
summary lists per model: wall time, size on disk, gate metrics and verdicts.
With --report it also writes the HTML run report (stages/report.py).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from . import annex
from .core import audit_log, params
from .core.io import dir_size, one_line, read_json, sha256_tree, write_json, write_text
from .core.runtime import log
from .models.lineage import intact


def check_lineage(folder: Path) -> tuple[dict, list[str]]:
    problems = []
    path = folder / "lineage.json"
    if not path.is_file():
        return {}, [f"{folder}: no lineage.json"]
    lin = read_json(path)
    if not intact(folder):
        problems.append(f"{folder}: content differs from the hash in its lineage.json")
    for role, parent in lin["parents"].items():
        # the parent's content, not the hash its own lineage.json claims: a rebuilt or edited parent shows either way
        if Path(parent["path"]).exists() and sha256_tree(parent["path"]) != parent["sha256"]:
            problems.append(f"{folder}: parent {role} ({parent['path']}) changed since this artifact was made")
    return lin, problems


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", required=True)
    ap.add_argument("--verdicts", nargs="+", required=True, help="gate verdicts, named <model>.json")
    ap.add_argument("--data-gate", required=True)
    ap.add_argument("--quantize", required=True)
    ap.add_argument("--audit-log", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--markdown", required=True)
    ap.add_argument("--annex", nargs=2, metavar=("MD", "HTML"), help="write the Annex IV documentation here")
    ap.add_argument("--datasheets", default="reports/data/datasheets", help="the datasheets stage's folder")
    ap.add_argument("--pii", default="reports/data/pii.json", help="prepare's PII report")
    ap.add_argument("--governance", default=annex.GOVERNANCE, help="what only people can write (Annex IV)")
    ap.add_argument("--report", help="write the HTML run report here")
    ap.add_argument("--curves", nargs="*", default=[], help="training curves for the report, named <stage>.json")
    ap.add_argument("--data", default="data/prepared", help="prepare's output: its manifest is the data funnel")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)

    problems = [f"{args.audit_log}: {p}" for p in audit_log.verify(args.audit_log)]
    verdicts = {Path(v).stem: read_json(v) for v in args.verdicts}
    rows, lineages = [], {}
    for folder in map(Path, args.models):
        lin, found = check_lineage(folder)
        lineages[folder.name] = lin
        problems += found
        # Before any promotion the base model stands in as champion: show its scores.
        verdict = verdicts.get(folder.name) or (
            verdicts["champion"] if Path(verdicts["champion"]["path"]) == folder else {})
        rows.append({"model": folder.name, "path": folder.as_posix(), "stage": lin.get("stage"),
                     "sha256": lin.get("artifact", {}).get("sha256"), "wall_time_s": lin.get("wall_time_s"),
                     "size_mb": round(dir_size(folder) / 1e6, 1), "real": lin.get("real"),
                     "verdict": verdict.get("verdict"), "metrics": verdict.get("metrics", {}),
                     "by_source": verdict.get("by_source", {}).get("domain_ppl", {}),
                     "unresolved": verdict.get("unresolved", []),
                     "answers": {r["id"]: r["answer"] for r in verdict.get("scores", {}).get("ratchet_answers", [])}})
    champion = verdicts["champion"]
    shipped = verdicts.get("shipped", champion)
    questions = next((v["answers"] for v in verdicts.values() if v.get("answers")), [])
    summary = {"models": rows, "questions": [{k: q[k] for k in ("id", "question", "reference")} for q in questions], "champion": {"path": champion["path"], "metrics": champion["metrics"],
                            "by_source": champion.get("by_source", {}).get("domain_ppl", {})},
               **({"base": {"path": verdicts["base"]["path"], "metrics": verdicts["base"]["metrics"]}}
                  if "base" in verdicts else {}),
               "shipped": {"path": shipped["path"], "metrics": shipped["metrics"]},
               "data_gate": read_json(args.data_gate)["verdict"], "quantize": read_json(args.quantize),
               "gate_time_s": {name: v.get("wall_time_s") for name, v in verdicts.items()},
               "audit_log_entries": len(audit_log.entries(args.audit_log)), "problems": problems,
               "real": all(r["real"] for r in rows)}
    summary["promotions"] = [{k: e.get(k) for k in ("seq", "time_utc", "cycle", "week")}
                             for e in audit_log.entries(args.audit_log) if e.get("event") == "promotion"]
    write_json(args.out, summary)
    write_text(args.markdown, render(summary))
    if args.annex:
        cfgs = dict(zip(("gates", "promote", "eval", "prepare", "distill"), map(params.as_dict, params.load(
            args.params, "gates", "promote", "eval", "prepare", "distill"))))
        sections = annex.build(summary, verdicts, lineages, cfgs, Path(args.datasheets),
                               Path(args.pii), Path(args.governance))
        title = "Technical documentation (EU AI Act, Annex IV)" + ("" if summary["real"] else ": TEST PROFILE")
        write_text(args.annex[0], annex.to_markdown(title, sections))
        write_text(args.annex[1], annex.to_html(title, sections))
        missing = annex.check(Path(args.governance))
        log("audit", f"Annex IV -> {', '.join(args.annex)}"
            + (f"; {len(missing)} mandatory parts NOT PROVIDED in {args.governance}" if missing else ""))
    if args.report:
        from . import report

        write_text(args.report, report.build(verdicts, {Path(c).stem: read_json(c) for c in args.curves},
                                             read_json(Path(args.data) / "manifest.json"), audit_log.entries(args.audit_log),
                                             quantize=summary["quantize"]))
    if problems:
        raise SystemExit("audit: FAILED:\n  - " + "\n  - ".join(problems))
    log("audit", f"lineage of {len(rows)} artifacts verified; summary -> {args.markdown}")


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
