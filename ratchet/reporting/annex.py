"""Annex IV technical documentation (EU AI Act, Regulation (EU) 2024/1689) for the run's candidate model.

The audit stage writes it beside the run summary, as Markdown and HTML from one structure; promotion copies
it into the champion, so every promoted model carries its own. Its nine sections follow Annex IV. What the
pipeline knows is filled from its records: package versions, base model and how it was modified, compute,
data governance as Article 10(2) lists it (datasheets, PII and bias results), every gate metric with its date
and interval, the gate log, the changes since the champion, and the pre-determined change envelope of
point 2(f). What only people can write comes from reports/governance.yaml; an empty part is printed as
NOT PROVIDED, and `ratchet docs check` fails while a mandatory one is empty.
"""
from __future__ import annotations

import re
from pathlib import Path

import yaml

from ratchet.core.io import read_json
from ratchet.eval import scores
from ratchet.reporting import facts
from ratchet.reporting.render import render

TEMPLATE, HTML_TEMPLATE = "annex_iv.md.j2", "annex_iv.html.j2"

GOVERNANCE = "reports/governance.yaml"
# governance key -> (Annex IV point, what it asks); all of these must be written before `docs check` passes
MANDATORY = {
    "provider": ("1(a)", "the provider placing the system on the market or putting it into service"),
    "intended_purpose": ("1(a)", "the intended purpose: for what, for whom, in which setting, and what not"),
    "human_oversight": ("2(e), Article 14", "the human oversight measures"),
    "risk_management": ("5, Article 9", "the risk management system"),
    "standards_applied": ("7", "the harmonised standards applied, or the solutions adopted instead"),
    "declaration_of_conformity": ("8, Article 47", "the EU declaration of conformity"),
    "post_market_monitoring": ("9, Article 72", "the post-market monitoring plan"),
}
OPTIONAL = {
    "instructions_for_use": ("1(d)-(h)", "delivery, hardware in use, user interface, instructions for use"),
    "foreseeable_misuse": ("3", "foreseeable misuse and unintended outcomes"),
    "cybersecurity": ("2(h)", "cybersecurity measures in use"),
}
def governance(path: Path) -> dict:
    return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}) if path.is_file() else {}


def check(path: Path) -> list[str]:
    """The mandatory parts of the governance file that are still empty."""
    gov = governance(path)
    return [f"{path}: `{key}` is empty (Annex IV point {point}: {what})"
            for key, (point, what) in MANDATORY.items() if not str(gov.get(key) or "").strip()]


def _interval(f: dict) -> str:
    lo, hi = f.get("ci") or (None, None)
    return "-" if lo is None else f"{lo:.4g} .. {hi:.4g}"


def build(summary: dict, verdicts: dict[str, dict], lineages: dict[str, dict], params: dict, datasheets: Path,
          pii: Path, governance_file: Path) -> dict:
    """The facts templates/annex_iv.md.j2 words. `summary`: the audit stage's run summary; `verdicts`: gate verdicts
    by model; `lineages`: lineage.json by model name; `params`: params.yaml as read (the gate rules, promotion and
    evaluation settings, the languages kept); the datasheets folder, the PII report and the governance file as the
    audit stage is given them. What the run did is read from the lineages (facts.run), never from params.yaml."""
    sheets = {p.stem: read_json(p) for p in sorted(datasheets.glob("*.json"))}
    pii = read_json(pii) if pii.is_file() else {}
    shipped = lineages.get("onnx", {})
    src = (lineages.get("base", {}).get("source") or {})
    data_rows = []
    for role, sheet in sheets.items():
        acc = sheet.get("preprocessing", {}).get("accounting", {})
        for f in sheet.get("collection", {}).get("sources", []):
            data_rows.append([role, f.get("file"), f.get("license"), f.get("origin"), f.get("records_in"),
                              f.get("kept"), f.get("redacted"), f.get("quarantined")])
        if not sheet.get("collection", {}).get("sources"):
            data_rows.append([role, "-", "-", "-", acc.get("in"), acc.get("kept"), acc.get("redacted"),
                              acc.get("quarantined")])
    rules = {model: _unfold(entries) for model, entries in params.get("gates", {}).items()}
    metrics = list(dict.fromkeys(m for v in verdicts.values() for m in v.get("metrics", {}) if "[" not in m))
    ref = {name: verdicts.get(name, {}).get("metrics", {}) for name in ("champion", "sft", "shipped", "onnx")}
    bias = {"bbq_bias_ambig", "bbq_bias_disambig", "bbq_gap_disambig", "stereotype_pref", "stereotype_bias", "bbq_accuracy",
            "bbq_accuracy_ambig", "bbq_accuracy_disambig"}
    return {
        "real": summary.get("real", True), "gov": governance(governance_file), "asks": MANDATORY | OPTIONAL,
        "governance": GOVERNANCE, "run": facts.run(lineages),
        "shipped": {"sha256": shipped.get("artifact", {}).get("sha256"), "commit": shipped.get("code", {}).get("commit"),
                    "dirty": shipped.get("code", {}).get("dirty"), "hardware": facts.hardware(shipped)},
        "packages": sorted((shipped.get("packages") or {}).items()), "packages_by_name": shipped.get("packages") or {},
        "base_model": (f"`{src.get('package')}=={src.get('version')}` file `{src.get('file')}` (sha256 "
                       f"{str(src.get('sha256'))[:16]})" if src.get("kind") == "wheel"
                       else f"{src.get('kind', 'not recorded')} {src.get('path', '')}".strip()),
        "models": [[name, lin.get("stage"), ", ".join(lin.get("parents", {})) or "-", lin.get("wall_time_s"),
                    lin.get("finished_utc")] for name, lin in lineages.items()],
        "stage_params": [[name, ", ".join(f"{k}={v}" for k, v in sorted(
            next(iter(lin.get("params", {}).values()), {}).items()))] for name, lin in lineages.items()
            if lin.get("params")],
        "compute": [[name, (hw := facts.hardware(lin))["cpus"], hw["threads"], hw["machine"],
                     hw["device"] or facts.NOT_RECORDED,
                     facts.precision(next(iter(lin.get("params", {}).values()), {})) or "-"]
                    for name, lin in lineages.items() if lin],
        "data_rows": data_rows, "generated": model_generated(lineages),
        "canaries": facts.canaries(lineages), "canary_rows": audit_canaries(lineages),
        "source_notes": [[f.get("file"), f.get("what"), f.get("notes")] for sheet in sheets.values()
                         for f in sheet.get("collection", {}).get("sources", [])],
        "pii_rows": [[d, e, c.get("records"), c.get("hits"), c.get("drop", 0), c.get("redact", 0)]
                     for d, ents in sorted(pii.get("by_drop", {}).items()) for e, c in sorted(ents.items())]
                    if pii else None,
        "rules": [[gate, _rule(r)] for gate, rs in rules.items() for r in rs],
        "rule_refs": _refs(r for rs in rules.values() for r in rs),
        "bias_refs": _refs(r for rs in rules.values() for r in rs if r["metric"] in bias),
        "accept_test_models": params.get("promote", {}).get("accept_test_models"),
        "eval": {k: params.get("eval", {}).get(k) for k in ("confidence", "bootstrap", "max_length")},
        "eval_dtypes": sorted({v["eval_params"]["dtype"] for v in verdicts.values()
                               if (v.get("eval_params") or {}).get("dtype")}),
        "results": [[name, v.get("time_utc"), v.get("verdict"), f["rule"], f.get("value"), f.get("ref_value"),
                     _interval(f), f.get("limit"), "yes" if f.get("resolved") else "no",
                     {"pass": "pass", "hold": "hold"}.get(f.get("outcome", "pass" if f.get("passed") else "fail"), "FAIL")]
                    for name, v in verdicts.items() for f in v.get("findings", [])],
        "metrics": metrics,
        "metric_rows": [[name, *(v.get("metrics", {}).get(m) for m in metrics)] for name, v in verdicts.items()],
        "metric_about": [[m, scores.METRICS[m].about, "higher" if scores.METRICS[m].higher_is_better else "lower"]
                         for m in metrics if m in scores.METRICS],
        "languages": params.get("prepare", {}).get("languages") or [facts.NOT_RECORDED],
        "champion_path": summary.get("champion", {}).get("path"),
        "champion_is_base": (not summary.get("promotions")
                             and summary.get("champion", {}).get("path") == lineages.get("base", {}).get(
                                 "artifact", {}).get("path", "models/base")),
        "changes": [[m, ref["champion"].get(m), ref["sft"].get(m), ref["shipped"].get(m), ref["onnx"].get(m)]
                    for m in metrics],
        "promotions": [[e.get("cycle"), e.get("week"), e.get("time_utc"), e.get("seq")]
                       for e in summary.get("promotions", [])],
    }


def _unfold(entries: list[dict]) -> list[dict]:
    """A gate's rules one by one, as the gate checks them: a group's comparing rule once per ref, an absolute rule
    once (params.GatesConfig.located)."""
    out = []
    for e in entries:
        if "rules" not in e:
            out.append(e)
            continue
        for r in e["rules"]:
            compares = any(r.get(k) is not None for k in ("max_ratio", "max_worse", "min_gain"))
            out += [r | {"ref": ref} for ref in e["refs"]] if compares else [r]
    return out


def _refs(rules) -> str:
    """The references rules compare with, in the order they first appear, worded; a model of the run is "the parent"."""
    names = {"champion": "the champion", "base": "the base model", "shipped": "the shipped model"}
    refs = list(dict.fromkeys(names.get(r["ref"], "the parent") for r in rules if r.get("ref")))
    return " and ".join([", ".join(refs[:-1]), refs[-1]] if len(refs) > 1 else refs)


def model_generated(lineages: dict[str, dict]) -> list[list]:
    """Rows for the text models wrote for training, as the stages' lineage records it: sft's self-distilled
    replies, and the rehearsal blocks of dapt (the champion's) and distill (the teacher's)."""
    rows = []
    for name, lin in lineages.items():
        sd = lin.get("self_distilled") or {}
        if sd.get("model_generated"):
            rows.append([name, "instruction replies rewritten from their references (self-distillation)",
                         sd.get("generated_by"), f"{sd.get('rewrite', sd.get('replies'))} replies"])
        reh = lin.get("rehearsal") or {}
        if reh.get("model_generated"):
            rows.append([name, f"rehearsal text sampled at temperature {reh.get('temperature')}",
                         reh.get("source") or lin.get("parents", {}).get("sft", {}).get("path", "the teacher"),
                         f"{reh.get('blocks')} blocks, {reh.get('tokens')} tokens"])
    return rows


def audit_canaries(lineages: dict[str, dict]) -> list[list]:
    """Rows for the audit text dapt inserted on purpose, as its lineage records it: each canary, its text, how
    many times it went into the batches and at which steps; a control went in nowhere."""
    c = facts.canaries(lineages)
    if c is None:
        return []
    return [[x.get("id"), x.get("prefix", "") + x.get("secret", ""),
             x.get("count") if x.get("count") else "0 (control)", ", ".join(map(str, x.get("steps") or [])) or "-"]
            for x in c["inserted"] + c["controls"]]


def _rule(r: dict) -> str:
    where = {"newest": " (the newest source)", "earlier": " (each earlier source)"}.get(r.get("source") or "")
    metric = r["metric"] + (where or (" (each source)" if r.get("per_source") else ""))
    if r.get("min_gain") is not None:
        return f"{metric} at least {r['min_gain']} better than {r['ref']}'s"
    if r.get("max_ratio") is not None:
        return f"{metric} at most {r['max_ratio']}x {r['ref']}'s"
    if r.get("max_worse") is not None:
        return f"{metric} at most {r['max_worse']} worse than {r['ref']}'s"
    if r.get("max") is not None:
        return f"{metric} <= {r['max']}"
    return f"{metric} >= {r.get('min')}"


def to_markdown(facts_: dict) -> str:
    """templates/annex_iv.md.j2 for build()'s facts."""
    return render(TEMPLATE, **facts_)


def blocks(markdown: str) -> tuple[str, list[dict]]:
    """The title and sections of the Markdown to_markdown writes (headings, paragraphs, tables, NOT PROVIDED
    notes), for the HTML page: one document, worded once."""
    lines = markdown.splitlines()
    title, sections = lines[0].removeprefix("# "), []
    chunks, chunk = [], []
    for line in lines[1:] + [""]:
        if line.strip():
            chunk.append(line)
        elif chunk:
            chunks.append(chunk)
            chunk = []
    for chunk in chunks:
        if chunk[0].startswith("## "):
            sections.append({"title": chunk[0][3:], "blocks": []})
            continue
        if chunk[0].startswith("|"):
            rows = [[c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", r.strip()[1:-1])]
                    for r in chunk if not r.startswith("|---")]
            block = {"kind": "table", "head": rows[0], "rows": rows[1:]}
        elif m := MISSING.match(" ".join(chunk)):
            block = {"kind": "missing", "point": m["point"], "what": m["what"], "key": m["key"]}
        else:
            block = {"kind": "p", "text": "\n".join(chunk)}
        sections[-1]["blocks"].append(block)
    return title, sections


MISSING = re.compile(r"\*\*NOT PROVIDED\*\* \(point (?P<point>.+?): (?P<what>.+)\): write `(?P<key>\w+)` in ")


def to_html(markdown: str) -> str:
    """templates/annex_iv.html.j2: the Markdown's blocks as a page, escaped."""
    title, sections = blocks(markdown)
    return render(HTML_TEMPLATE, title=title, sections=sections, governance=GOVERNANCE)
