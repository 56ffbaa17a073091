"""A gate verdict as Markdown: every rule with its interval and decision, task times, side-by-side answers.
"""
from __future__ import annotations

from ratchet.core.io import one_line


def render(v: dict) -> str:
    """The verdict for a person: what was measured, every rule with its interval, and the decision."""
    lines = [f"# Gate: {v['model']}", "", f"`{v['path']}` (sha256 {v['artifact_sha256'][:16]}), scored "
             f"{v['time_utc']} in {v['wall_time_s']:.0f} s on "
             + ", ".join(f"{n} documents of {task}" for task, n in v["eval_docs"].items()) + "."
             + (f" Not scored, as no rule of this gate reads them: {', '.join(v['not_scored'])}."
                if v.get("not_scored") else ""), ""]
    if v.get("seconds"):
        lines += ["Time: " + ", ".join(f"{'loading the model' if k == 'load' else k} in {s:.0f} s"
                                   for k, s in v["seconds"].items())
                  + (f"; reused: {', '.join(v['reused_from'])}" if v.get("reused_from") else "") + ".", ""]
    if not v["real"]:
        lines += ["**Tiny test model: these numbers are not real results.**", ""]
    ci = v.get("intervals", {})
    lines += [f"**Verdict: {v['verdict']}** ({v['reason']})", "",
              f"| metric | better | value | {v['eval_params']['confidence']:.0%} interval |", "|---|---|---:|---|"]
    lines += [f"| {m} | {v['directions'][m]} | {x:.4g} | "
              + (f"{ci[m][0]:.4g} .. {ci[m][1]:.4g} |" if m in ci else "- |") for m, x in v["metrics"].items()]
    lines += [f"| domain_ppl[{src}] | lower | {x:.4g} | - |" for src, x in v["by_source"]["domain_ppl"].items()]
    if v["findings"]:
        lines += ["", "Each rule is decided on a paired bootstrap interval of how much worse the model is than its "
                  "reference (larger is worse).", "",
                  "| rule | value | reference | estimate | interval | limit | resolved | result |",
                  "|---|---:|---:|---:|---|---:|---|---|"]
        for f in v["findings"]:
            ci = f"{f['ci'][0]:.4g} .. {f['ci'][1]:.4g}" if "ci" in f else "-"
            est = f"{f['estimate']:.4g}" if "estimate" in f else "-"
            ref = f"{f['ref_value']:.4g}" if "ref_value" in f else "-"
            value = f"{f['value']:.4g}" if f["value"] == f["value"] else "-"
            limit = -f["limit"] if f["kind"] == "value" and f["higher_is_better"] else f["limit"]  # a `min` bound
            lines.append(f"| {f['rule']} | {value} | {ref} | {est} | {ci} | {limit:g} | "
                         f"{'yes' if f['resolved'] else '**no**'} | {'pass' if f['passed'] else '**FAIL**'} |")
    for a in v.get("answers", []):
        lines += ["", f"**Held-out question** {a['id']}: {a['question']}", "",
                  f"- reference answer: {one_line(a['reference'])}"]
        lines += [f"- {name}: {one_line(text)}" for name, text in a["answers"].items()]
    return "\n".join(lines) + "\n"
