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

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ratchet.core.io import read_json
from ratchet.eval import scores

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
@dataclass
class Section:
    title: str
    blocks: list[tuple] = field(default_factory=list)  # ("p", text) | ("list", [text]) | ("table", head, rows)
                                                       # | ("missing", key, point, what)

    def p(self, text: str) -> "Section":
        self.blocks.append(("p", text))
        return self

    def items(self, rows: list[str]) -> "Section":
        self.blocks.append(("list", rows))
        return self

    def table(self, head: list[str], rows: list[list]) -> "Section":
        self.blocks.append(("table", head, [[_cell(c) for c in r] for r in rows]))
        return self

    def human(self, gov: dict, key: str) -> "Section":
        point, what = (MANDATORY | OPTIONAL)[key]
        text = str(gov.get(key) or "").strip()
        self.blocks.append(("p", text) if text else ("missing", key, point, what))
        return self


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)


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
          pii: Path, governance_file: Path) -> list[Section]:
    """The nine sections. `summary`: the audit stage's run summary; `verdicts`: gate verdicts by model;
    `lineages`: lineage.json by model name; `params`: params.yaml as read; the datasheets folder, the PII report
    and the governance file as the audit stage is given them."""
    gov = governance(governance_file)
    sheets = {p.stem: read_json(p) for p in sorted(datasheets.glob("*.json"))}
    pii = read_json(pii) if pii.is_file() else {}
    shipped = lineages.get("onnx", {})
    base = lineages.get("base", {})
    src = base.get("source", {})
    real = summary.get("real", True)
    out = []

    s = Section("1. General description of the AI system")
    if not real:
        s.p("**Tiny test profile: random weights; nothing below is a real result.**")
    s.human(gov, "provider").human(gov, "intended_purpose")
    s.p(f"The system is a causal language model shipped as an int8 ONNX file (`models/onnx`, sha256 "
        f"{str(shipped.get('artifact', {}).get('sha256'))[:16]}), produced by the ratchet pipeline at code "
        f"commit {str(shipped.get('code', {}).get('commit'))[:12]}"
        f"{' (uncommitted changes)' if shipped.get('code', {}).get('dirty') else ''}.")
    s.p("Software versions (1(c)), as recorded in the shipped model's lineage:")
    s.table(["package", "version"], sorted((shipped.get("packages") or {}).items()))
    hw = shipped.get("hardware", {})
    s.p(f"Hardware it was built on (1(e)): {hw.get('cpus')} CPUs ({hw.get('machine')}, {hw.get('system')}), "
        f"{hw.get('threads')} threads, Python {hw.get('python')}. It runs with ONNX Runtime on CPU.")
    s.human(gov, "instructions_for_use")
    out.append(s)

    s = Section("2. Elements of the AI system and its development")
    s.p("2(a) Methods and steps. Base model: "
        + (f"`{src.get('package')}=={src.get('version')}` file `{src.get('file')}` (sha256 {src['sha256'][:16]})"
           if src.get("kind") == "wheel" else f"{src.get('kind', 'unknown')} {src.get('path', '')}")
        + f", {base.get('model', {}).get('parameters', 0) / 1e6:.1f}M parameters. It is modified by: continued "
          "pretraining on the domain (dapt, full parameters, replay of earlier and general text, EWC); LoRA "
          "fine-tuning on instruction pairs (sft, replay, EWC, self-distilled targets); distillation into a "
          "smaller student (distill); export to ONNX and int8 quantization (quantize). Each step is gated (2(g)).")
    s.table(["model", "stage", "parents", "wall time (s)", "finished"],
            [[name, lin.get("stage"), ", ".join(lin.get("parents", {})) or "-", lin.get("wall_time_s"),
              lin.get("finished_utc")] for name, lin in lineages.items()])
    s.p("2(b) Design choices and what is optimised: every knob is in params.yaml, recorded per artifact in its "
        "lineage.json. Training minimises next-token cross-entropy (dapt, sft on replies only) plus an EWC "
        "penalty; distillation minimises the KL divergence to the teacher.")
    s.table(["stage", "parameters"], [[name, ", ".join(f"{k}={v}" for k, v in sorted(
        next(iter(lin.get("params", {}).values()), {}).items()))] for name, lin in lineages.items()
        if lin.get("params")])
    s.p("2(c) Compute used: the wall times above on the hardware of point 1; no GPU.")
    s.p("2(d) Data (Article 10(2)): the datasheets (reports/data/datasheets/) hold, per dataset, its purpose, "
        "origin and license per file, how it was collected, every preparation step with counts (parsing, "
        "normalisation, length and language filters, exact and near deduplication, PII), the split rule, and "
        "known gaps and skews as the sources record them.")
    rows = []
    for role, sheet in sheets.items():
        acc = sheet.get("preprocessing", {}).get("accounting", {})
        for f in sheet.get("collection", {}).get("sources", []):
            rows.append([role, f.get("file"), f.get("license"), f.get("origin"), f.get("records_in"),
                         f.get("kept"), f.get("redacted"), f.get("quarantined")])
        if not sheet.get("collection", {}).get("sources"):
            rows.append([role, "-", "-", "-", acc.get("in"), acc.get("kept"), acc.get("redacted"),
                         acc.get("quarantined")])
    s.table(["role", "file", "license", "origin", "in", "kept", "redacted", "quarantined"], rows)
    generated = model_generated(lineages)
    s.p("Model-generated text used in training (10(2)(b)): made by a model during the run, used by one stage, "
        "recorded in that artifact's lineage.json, never kept as data nor fed back as a later cycle's domain data."
        + ("" if generated else " None in this run."))
    if generated:
        s.table(["artifact", "what", "written by", "amount"], generated)
    s.p("Known gaps, skews and assumptions per source (10(2)(d), (h)), as data/sources.yaml records them:")
    s.table(["file", "what", "notes"], [[f.get("file"), f.get("what"), f.get("notes")] for sheet in sheets.values()
                                        for f in sheet.get("collection", {}).get("sources", [])])
    s.p("Possible biases (10(2)(f), (g)): every model trained on these data is examined by the bias gates (BBQ "
        "gender identity, stereotype-pair preference; point 3) and may not be more biased than the champion "
        "beyond a tolerance."
        + (" Distillation rehearses general text the teacher writes, not the replay buffer's fortunes, whose "
           "stereotypes a student took on (BENCHMARKS.md#student-rehearsal)." if params.get("distill", {}).get("replay_source")
           == "teacher" else ""))
    if pii:
        s.p("Personal data (10(2)(b), 10(5)): presidio and pattern recognizers scan every record; the policy per "
            "entity type decides drop, redact or allow:")
        s.table(["drop", "entity", "records", "hits", "dropped", "redacted"],
                [[d, e, c.get("records"), c.get("hits"), c.get("drop", 0), c.get("redact", 0)]
                 for d, ents in sorted(pii.get("by_drop", {}).items()) for e, c in sorted(ents.items())])
    s.human(gov, "human_oversight")
    s.p("2(f) Pre-determined changes: the weekly update (`ratchet update`) retrains on a new data drop and "
        "replaces the shipped model without a new assessment only inside this envelope: the same pipeline "
        "(dvc.yaml at the recorded commit), the data gate, and every model gate below passing, decided on paired "
        "bootstrap intervals against the champion, the base model and the parent; a refused candidate leaves the "
        "champion byte for byte as it was, and every decision is in the hash-chained audit log.")
    rules = params.get("gates", {})
    s.table(["gate", "rule"], [[gate, _rule(r)] for gate, rs in rules.items() for r in rs])
    promote = params.get("promote", {})
    s.p(f"Promotion also requires: nothing stale against dvc.lock, every lineage intact, real (not test) "
        f"results{' (test results accepted: TEST PROFILE)' if promote.get('accept_test_models') else ''}.")
    s.p("2(g) Validation and testing: each gate scores its model with lm-evaluation-harness on local held-out "
        "tasks; every rule's decision and interval (confidence "
        f"{params.get('eval', {}).get('confidence')}, {params.get('eval', {}).get('bootstrap')} bootstrap "
        "resamples) is in reports/gates/<model>.json and .md. Results, dated:")
    s.table(["model", "scored (UTC)", "verdict", "rule", "value", "reference", "interval", "limit", "resolved",
             "result"],
            [[name, v.get("time_utc"), v.get("verdict"), f["rule"], f.get("value"), f.get("ref_value"),
              _interval(f), f.get("limit"), "yes" if f.get("resolved") else "no",
              "pass" if f.get("passed") else "FAIL"]
             for name, v in verdicts.items() for f in v.get("findings", [])])
    s.human(gov, "cybersecurity")
    out.append(s)

    s = Section("3. Monitoring, functioning and control")
    s.p("Capabilities and limits, measured: every gate metric of every model of the run (lower is better for "
        "perplexity, repetition, bias, leaks and exposure; higher for accuracy and chrF).")
    metrics = list(dict.fromkeys(m for v in verdicts.values() for m in v.get("metrics", {}) if "[" not in m))
    s.table(["model", *metrics], [[name, *(v.get("metrics", {}).get(m) for m in metrics)]
                                  for name, v in verdicts.items()])
    s.p("Accuracy for groups of persons (bias): BBQ gender identity (ambiguous and disambiguated contexts) and "
        "stereotype-pair preference are gated against the champion (rules above). Known limits: a 135M-parameter "
        "model makes factual errors and may invent names in its answers; the held-out sets are small, and rules "
        "whose interval spans their limit are decided by the point estimate and flagged unresolved.")
    s.human(gov, "foreseeable_misuse")
    s.p("Input data specification: text in English (the language filter keeps `"
        + ", ".join(params.get("prepare", {}).get("languages", ["en"])) + "`), at most "
        f"{params.get('eval', {}).get('max_length')} tokens of context as evaluated.")
    out.append(s)

    s = Section("4. Appropriateness of the performance metrics")
    s.table(["metric", "what it measures", "better"],
            [[m, scores.METRICS[m].about, "higher" if scores.METRICS[m].higher_is_better else "lower"]
             for m in metrics if m in scores.METRICS])
    s.p("Each metric declares its direction and is scored per document, so every rule is a paired comparison "
        "with a bootstrap interval on the same documents as its reference.")
    out.append(s)

    out.append(Section("5. Risk management system (Article 9)").human(gov, "risk_management"))

    s = Section("6. Changes through the lifecycle")
    champ = verdicts.get("champion", {}).get("metrics", {})
    cand = verdicts.get("sft", {}).get("metrics", {})
    shipped_then = verdicts.get("shipped", {}).get("metrics", {})
    ship_now = verdicts.get("onnx", {}).get("metrics", {})
    s.p("Against the champion this run would replace (the base model before the first promotion), on the same "
        "documents:")
    s.table(["metric", "champion teacher", "this teacher (sft)", "shipped now", "this shipped model (onnx)"],
            [[m, champ.get(m), cand.get(m), shipped_then.get(m), ship_now.get(m)] for m in metrics])
    hist = summary.get("promotions", [])
    if hist:
        s.p("Promotions so far (audit log):")
        s.table(["cycle", "week", "promoted (UTC)", "audit entry"],
                [[e.get("cycle"), e.get("week"), e.get("time_utc"), e.get("seq")] for e in hist])
    else:
        s.p("No promotion yet: this would be the first champion.")
    out.append(s)

    out.append(Section("7. Harmonised standards applied").human(gov, "standards_applied"))
    out.append(Section("8. EU declaration of conformity").human(gov, "declaration_of_conformity"))
    s = Section("9. Post-market monitoring (Article 72)").human(gov, "post_market_monitoring")
    s.p("What the pipeline provides for it: every weekly cycle re-scores the champion on the same held-out sets "
        "and records the verdicts in the audit log; `ratchet lineage` and `ratchet audit verify` check the "
        "records years later.")
    out.append(s)
    return out


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


def _rule(r: dict) -> str:
    metric = r["metric"] + (" (each source)" if r.get("per_source") else "")
    if r.get("max_ratio") is not None:
        return f"{metric} at most {r['max_ratio']}x {r['ref']}'s"
    if r.get("max_worse") is not None:
        return f"{metric} at most {r['max_worse']} worse than {r['ref']}'s"
    if r.get("max") is not None:
        return f"{metric} <= {r['max']}"
    return f"{metric} >= {r.get('min')}"


def to_markdown(title: str, sections: list[Section]) -> str:
    lines = [f"# {title}", ""]
    for s in sections:
        lines += [f"## {s.title}", ""]
        for b in s.blocks:
            if b[0] == "p":
                lines += [b[1], ""]
            elif b[0] == "list":
                lines += [f"- {x}" for x in b[1]] + [""]
            elif b[0] == "missing":
                lines += [f"**NOT PROVIDED** (point {b[2]}: {b[3]}): write `{b[1]}` in {GOVERNANCE}.", ""]
            else:
                head, rows = b[1], b[2]
                lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                lines += ["| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in r) + " |"
                          for r in rows] + [""]
    return "\n".join(lines)


HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 70rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: .5rem 0 1rem; font-size: .85rem; }
th, td { border: 1px solid #ccc; padding: .2rem .5rem; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
.missing { background: #fff3cd; border-left: 4px solid #d39e00; padding: .4rem .6rem; }
p { white-space: pre-line; }
</style></head><body>
<h1>{{ title }}</h1>
{% for s in sections %}<section><h2>{{ s.title }}</h2>
{% for b in s.blocks %}{% if b[0] == "p" %}<p>{{ b[1] }}</p>
{% elif b[0] == "list" %}<ul>{% for x in b[1] %}<li>{{ x }}</li>{% endfor %}</ul>
{% elif b[0] == "missing" %}<p class="missing"><strong>NOT PROVIDED</strong> (point {{ b[2] }}: {{ b[3] }}):
write <code>{{ b[1] }}</code> in {{ governance }}.</p>
{% else %}<table><tr>{% for h in b[1] %}<th>{{ h }}</th>{% endfor %}</tr>
{% for r in b[2] %}<tr>{% for c in r %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}</table>
{% endif %}{% endfor %}</section>
{% endfor %}</body></html>
"""


def to_html(title: str, sections: list[Section]) -> str:
    import jinja2

    env = jinja2.Environment(autoescape=True, trim_blocks=True)
    return env.from_string(HTML).render(title=title, sections=sections, governance=GOVERNANCE)
