"""How many gate rules a run's evaluation sets resolve: every gated model's stored per-document scores re-decided
under today's rules (params.yaml), each rule's outcome (pass, fail, or hold: its interval spans its limit), and
for each hold about how many more documents would resolve it.

    .venv/bin/python -m benchmarks.experiments.bench_gate_resolution --verdicts reports/gates

The verdicts are the gate stage's JSON files of one run (reports/gates/<model>.json, per-document scores
included): the gated models (dapt, sft, student, onnx) and the references they compare with (champion, shipped,
base). Nothing is scored again: a change of rules or tolerances is judged on the documents the run scored; a
change of the evaluation sets' sizes needs a run (the `more_docs` column says where one would pay).
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from benchmarks import common
from ratchet.core import params
from ratchet.core.io import read_json
from ratchet.eval.rules import decide, load_rules

REFERENCES = ("champion", "shipped", "base")


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--verdicts", default="reports/gates", help="folder of one run's gate verdicts")
    ap.add_argument("--params", default=str(common.ROOT / "params.yaml"))
    args = ap.parse_args()

    gates = load_rules(args.params)
    run, ecfg = params.load(args.params, "run", "eval")
    folder = Path(args.verdicts)
    verdicts = {m: read_json(folder / f"{m}.json") for m in (*REFERENCES, *gates.models())
                if (folder / f"{m}.json").is_file()}
    refs = {m: v["scores"] for m, v in verdicts.items()}
    rows, per_gate, metric_holds = [], [], Counter()
    for model in gates.models():
        if model not in verdicts:
            continue
        findings = decide(refs[model], gates.rules(model), refs, draws=ecfg.bootstrap, confidence=ecfg.confidence,
                          seed=run.seed, newest=verdicts[model].get("newest_source"))
        count = Counter(f["outcome"] for f in findings)
        per_gate.append([model, len(findings), count["pass"], count["fail"], count["hold"],
                         sum(f["resolved"] for f in findings) / len(findings)])
        for f in findings:
            if f["outcome"] != "pass":
                metric_holds[f["metric"]] += f["outcome"] == "hold"
                rows.append([model, f["rule"], f["outcome"], f.get("estimate"),
                             f"{f['ci'][0]:.4g} .. {f['ci'][1]:.4g}" if "ci" in f else "-", f.get("docs"),
                             f.get("more_docs")])
    total = sum(r[1] for r in per_gate)
    resolved = sum(r[5] * r[1] for r in per_gate)
    gates_table = common.table(["gate", "rules", "pass", "fail", "hold", "resolved"],
                               per_gate + [["all", total, sum(r[2] for r in per_gate), sum(r[3] for r in per_gate),
                                            sum(r[4] for r in per_gate), resolved / total if total else 0.0]],
                               [None, None, None, None, None, ".0%"])
    open_table = common.table(["gate", "rule", "outcome", "estimate", "interval", "docs", "more docs to resolve"],
                              rows, [None, None, None, ".4g", None, None, None])
    print(common.markdown(gates_table))
    print()
    print(common.markdown(open_table))
    common.record(__file__, {"verdicts": str(folder), "real": all(v.get("real", True) for v in verdicts.values()),
                             "resolved_share": resolved / total if total else None, "rules": total,
                             "holds_by_metric": dict(metric_holds),
                             "eval_docs": verdicts[next(iter(verdicts))].get("eval_docs"),
                             "tables": {"gates": gates_table, "open": open_table}})


if __name__ == "__main__":
    main()
