"""The champion's model card (README.md): a Hugging Face card whose prose is templates/model_card.md.j2 and whose
statements about how the model was made are read from the lineages of the run it came from.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from ratchet.core.io import read_json
from ratchet.eval import scores
from ratchet.reporting import facts
from ratchet.reporting.render import render as render_template

TEMPLATE = "model_card.md.j2"

# gate metric -> the metric type a model-index result names
METRIC_TYPE = {"domain_ppl": "perplexity", "general_ppl": "perplexity", "domain_mc_acc": "accuracy",
               "general_mc_acc": "accuracy", "answer_chrf": "chrf", "answer_repetition": "repetition",
               "bbq_bias_ambig": "bias_score", "bbq_bias_disambig": "bias_score", "bbq_gap_disambig": "bias_score",
               "stereotype_bias": "bias_score",
               "stereotype_pref": "preference",
               "canary_leaks": "leaks", "canary_exposure": "exposure"}


def model_card(r: dict, source: dict, inputs: list[str], shipped: Path) -> str:
    """The champion's README.md: a Hugging Face model card whose metadata carries the base model, license,
    datasets and the shipped model's gate results as a model-index; its prose (templates/model_card.md.j2)
    says how the model was made from the lineages of `shipped` and the models it came from."""
    shipped_metrics = r["metrics"].get("onnx", {})
    results = []
    for task in dict.fromkeys(scores.METRICS[m].task for m in METRIC_TYPE if m in shipped_metrics):
        results.append({"task": {"type": "text-generation"},
                        "dataset": {"name": task, "type": task, "split": "held-out"},
                        "metrics": [{"type": METRIC_TYPE[m], "name": m, "value": round(float(shipped_metrics[m]), 4),
                                     "verified": False}
                                    for m in METRIC_TYPE if m in shipped_metrics and scores.METRICS[m].task == task]})
    lins = lineages(shipped)
    bits = ((lins.get("quantize") or {}).get("params") or {}).get("quantize", {}).get("weight_bits")
    meta = {"library_name": "transformers", "pipeline_tag": "text-generation", "license": source.get("license", "other"),
            **({"base_model": source["model_id"]} if source.get("model_id") else {}),
            "datasets": inputs, "tags": ["ratchet", "champion", "onnx", *([f"int{bits}"] if bits is not None else [])],
            "model-index": [{"name": f"champion-{r['cycle']}", "results": results}]}
    return render(meta, r, lins)


def lineages(shipped: Path) -> dict[str, dict]:
    """The lineage of the shipped model and of each model it came from in this run, by stage, following the
    parents each lineage names; a previous champion (stage promote) ends the walk."""
    out, todo = {}, [Path(shipped)]
    while todo:
        path = todo.pop(0) / "lineage.json"
        if not path.is_file():
            continue
        lin = read_json(path)
        if lin.get("stage") in out or lin.get("stage") == "promote":
            continue
        out[lin["stage"]] = lin
        todo += [Path(p["path"]) for p in (lin.get("parents") or {}).values()]
    return out


def render(meta: dict, record: dict, lins: dict[str, dict]) -> str:
    """The card: `meta` its YAML front matter, `record` the champion's record (champion.json), `lins` the run's
    lineages (lineages())."""
    shipped = lins.get("quantize", {})
    return render_template(TEMPLATE, meta=yaml.safe_dump(meta, sort_keys=False, width=120).strip(), r=record,
                           run=facts.run(lins), hardware=facts.hardware(shipped) if shipped else None, nan=float("nan"))
