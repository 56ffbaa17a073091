"""audit: check the lineage of every artifact and write the run summary.

    python -m stages audit --models models/base models/dapt models/sft models/student models/onnx \
        --verdicts reports/gates/{champion,shipped,dapt,sft,student,onnx}.json --data-gate reports/data/validation.json \
        --quantize reports/quantize.json --audit-log reports/audit/log.jsonl \
        --out reports/summary.json --markdown reports/summary.md \
        --report reports/report.html --curves reports/train/{dapt,sft,distill}

For every model folder: its lineage.json exists, its recorded content hash
matches the folder, and each parent it names is still there, with its own
lineage.json and the hash recorded. The
audit log's hash chain must be intact. Any mismatch fails the stage. The
summary lists per model: wall time, size on disk, gate metrics and verdicts.
With --report it also writes the HTML run report (ratchet/reporting/report.py).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ratchet.core import audit_log, params
from ratchet.core.history import read_history
from ratchet.core.io import dir_size, read_json, write_json, write_text
from ratchet.core.runtime import log
from ratchet.models.lineage import check_lineage
from ratchet.reporting import annex, facts
from ratchet.reporting.summary import render


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
    ap.add_argument("--curves", nargs="*", default=[],
                    help="training histories for the report: the training stages' DVCLive folders")
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
                     "answers": {r["id"]: r["answer"] for task in ("ratchet_answers", "ratchet_knowledge_answers")
                                 for r in verdict.get("scores", {}).get(task, [])}})
    champion = verdicts["champion"]
    shipped = verdicts.get("shipped", champion)
    questions = next((v["answers"] for v in verdicts.values() if v.get("answers")), [])
    summary = {"models": rows, "questions": [{k: q.get(k) for k in ("id", "kind", "source", "question", "reference")}
                                             for q in questions], "champion": {"path": champion["path"], "metrics": champion["metrics"],
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
    # what promotion requires of the documentation: every mandatory part people write is written
    summary["documentation"] = {"governance": args.governance,
                                "missing": annex.check(Path(args.governance)) if args.annex else None}
    write_json(args.out, summary)
    write_text(args.markdown, render(summary, facts.run(lineages)))
    if args.annex:
        cfgs = dict(zip(("gates", "promote", "eval", "prepare"), map(params.as_dict, params.load(
            args.params, "gates", "promote", "eval", "prepare"))))
        markdown = annex.to_markdown(annex.build(summary, verdicts, lineages, cfgs, Path(args.datasheets),
                                                  Path(args.pii), Path(args.governance)))
        write_text(args.annex[0], markdown)
        write_text(args.annex[1], annex.to_html(markdown))
        missing = summary["documentation"]["missing"]
        log("audit", f"Annex IV -> {', '.join(args.annex)}"
            + (f"; {len(missing)} mandatory parts NOT PROVIDED in {args.governance}" if missing else ""))
    if args.report:
        from ratchet.reporting import report

        write_text(args.report, report.build(verdicts, {Path(c).name: read_history(c) for c in args.curves},
                                             read_json(Path(args.data) / "manifest.json"), audit_log.entries(args.audit_log),
                                             quantize=summary["quantize"], run=facts.run(lineages)))
    if problems:
        raise SystemExit("audit: FAILED:\n  - " + "\n  - ".join(problems))
    log("audit", f"lineage of {len(rows)} artifacts verified; summary -> {args.markdown}")


