"""The data gate's verdict as Markdown.
"""
from __future__ import annotations


def markdown(report: dict, data: str) -> str:
    lines = [f"# Data gate: {report['verdict'].upper()}", "", report["reason"], "",
             "| role | split | rows | expectations met | failed |", "|---|---|---:|---:|---|"]
    for role, r in report["roles"].items():
        for split in ("train", "heldout"):
            s = r[split]
            failed = "; ".join(f"{f['expectation']} (observed {f['observed']})" for f in s["failed"]) or "-"
            lines.append(f"| {role} | {split} | {s['rows']} | {s['statistics'].get('successful_expectations')}"
                         f"/{s['statistics'].get('evaluated_expectations')} | {failed} |")
    lines += ["", f"| role | records in | quarantined | share | ceiling |", "|---|---:|---:|---:|---:|"]
    for role, r in report["roles"].items():
        q = r["quarantine"]
        lines.append(f"| {role} | {q['in']} | {q['quarantined']} | {q['share']:.1%} | {q['max']:.0%} |")
    undeclared = report["provenance"]["undeclared"]
    lines += ["", f"Provenance: {len(report['provenance']['declared'])} input files declared in data/sources.yaml"
                  + (f"; UNDECLARED: {', '.join(undeclared)}" if undeclared else "; none undeclared"),
              "", f"Quarantined records with their reasons: `{data}/quarantine.jsonl`.", ""]
    return "\n".join(lines)
