"""verify-repro on a gate stage: a rerun reproduces a verdict when it scored the same model on the same documents
with the same settings, reached the same outcome on every rule, and moved each metric by no more than its
tolerance; on one machine the tiny model scores bit for bit the same again in bfloat16."""
from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest

from ratchet.commands import verify_repro
from ratchet.commands.verify_repro import compare
from ratchet.core.params import GateRule
from ratchet.eval import scores
from ratchet.eval.rules import decide, outcome
from ratchet.reporting.verdict import render

# The sft verdict of a 2-core bf16 host, scored again after a kill: the same adapter (same sha256), another number.
RECORDED, RERUN = 76.31527, 76.31577


def domain_docs(ppl: float, n: int = 30, seed: int = 0) -> dict:
    """Per-document scores whose word perplexity over every document is exactly `ppl`."""
    rng = np.random.default_rng(seed)
    words = rng.integers(50, 400, n).astype(float)
    lp = rng.normal(0, 0.6, n)
    lp += math.log(ppl) - (words * lp).sum() / words.sum()
    return {"ratchet_domain_ppl": [{"id": f"d{i:03d}", "source": "seed", "ll": -w * x, "words": int(w),
                                    "bytes": int(w * 6)} for i, (w, x) in enumerate(zip(words, lp))]}


def rescored(docs: dict, ppl: float) -> dict:
    """The same documents, every log-likelihood moved alike so that the perplexity over all of them is `ppl`."""
    rows = docs["ratchet_domain_ppl"]
    now = math.exp(-sum(r["ll"] for r in rows) / sum(r["words"] for r in rows))
    return {"ratchet_domain_ppl": [{**r, "ll": r["ll"] - r["words"] * math.log(ppl / now)} for r in rows]}


DAPT = rescored(domain_docs(RECORDED), 74.0)  # the parent, 3% better on every document: sft passes 1.05x of it
RULES = [GateRule(metric="domain_ppl", max_ratio=1.05, ref="dapt")]


def verdict(docs: dict) -> dict:
    """A gate verdict laid out as the gate stage writes it (the fields its template reads and verify-repro checks)."""
    findings = decide(docs, RULES, {"dapt": DAPT})
    metrics = {"domain_ppl": scores.value("domain_ppl", docs), "domain_bpb": scores.value("domain_bpb", docs)}
    return {"model": "sft", "path": "models/sft", "artifact_sha256": "a" * 64, "adapter_of": "models/dapt",
            "eval_sha256": "e" * 64, "task_sha256": {"ratchet_domain_ppl": "t" * 64},
            "metrics": metrics, "by_source": {"domain_ppl": {"seed": metrics["domain_ppl"]}},
            "intervals": scores.intervals(docs, metrics, draws=200, confidence=0.9, seed=0),
            "eval_docs": {"ratchet_domain_ppl": len(docs["ratchet_domain_ppl"])},
            "directions": {"domain_ppl": "lower", "domain_bpb": "lower"}, "scores": docs, "seconds": {"load": 1.0},
            "eval_params": {"confidence": 0.9, "dtype": "bfloat16", "batch_size": 16}, "real": True,
            "time_utc": "2026-12-04T09:56:37Z", "wall_time_s": 181.0, "verdict": outcome(findings),
            "findings": findings, "resolved": f"{sum(f['resolved'] for f in findings)}/{len(findings)}",
            "reason": "every rule passed, each on its whole interval"}


def write(folder, v: dict) -> tuple:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sft.json").write_text(json.dumps(v, indent=1))
    (folder / "sft.md").write_text(render(v))
    metrics = {**{k: round(x, 4) for k, x in v["metrics"].items()}, "passed": int(v["verdict"] == "pass"),
               "domain_ppl_by_source": {s: round(x, 4) for s, x in v["by_source"]["domain_ppl"].items()}}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder / "sft.json", folder / "sft.md", folder / "metrics.json"


def pair(tmp_path, change=None, ppl: float = RERUN):
    """The recorded verdict's files, and a rerun's: the same documents scored to perplexity `ppl`, then `change`d."""
    docs = domain_docs(RECORDED)
    again = verdict(rescored(docs, ppl))
    if change:
        change(again)
    return write(tmp_path / "recorded", verdict(docs)), write(tmp_path / "rerun", again)


def test_the_kill_rerun_of_a_bf16_host_reproduces_a_gate_verdict_within_tolerance(tmp_path):
    (v, md, metrics), (v2, md2, metrics2) = pair(tmp_path)
    recorded = json.loads(v.read_text())
    assert recorded["metrics"]["domain_ppl"] == pytest.approx(RECORDED, abs=1e-9) and recorded["verdict"] == "pass"
    how, detail = compare(v, v2, scored=True)
    assert how == "tolerance", detail
    assert detail.startswith("the same outcomes; within tolerance: ") and "domain_ppl 76.31527 -> 76.31577" in detail
    assert compare(md, md2, scored=True) == ("identical", ""), "the Markdown shows 4 digits: 76.32 both times"
    assert compare(v, v2)[0] == "differs", "another stage's outputs are compared exactly"
    kind, amount = verify_repro.TOLERANCE["domain_ppl"]
    (v, md, metrics), (v2, md2, metrics2) = pair(tmp_path / "more", ppl=RECORDED * (1 + amount / 2))
    assert kind == "relative" and compare(v, v2, scored=True)[0] == "tolerance"
    assert compare(md, md2, scored=True) == ("tolerance", "rendered from sft.json")
    assert compare(metrics, metrics2, scored=True)[0] == "tolerance"


def test_a_metric_beyond_its_tolerance_differs_and_says_by_how_much(tmp_path):
    kind, amount = verify_repro.TOLERANCE["domain_ppl"]
    beyond = RECORDED * (1 + 3 * amount) if kind == "relative" else RECORDED + 3 * amount
    (v, md, metrics), (v2, md2, metrics2) = pair(tmp_path, ppl=beyond)
    how, detail = compare(v, v2, scored=True)
    assert how == "differs" and detail.startswith("domain_ppl "), detail
    assert f"beyond its tolerance {amount:g}" in detail
    assert "domain_ppl[seed]" in detail
    assert compare(md, md2, scored=True) == ("differs", "rendered from sft.json (differs)")
    assert compare(metrics, metrics2, scored=True)[0] == "differs"


def test_a_different_outcome_differs_whatever_the_metrics(tmp_path):
    def held(v):
        v["verdict"] = "hold"
        v["findings"][0].update(outcome="hold", passed=False, resolved=False)

    (v, _, _), (v2, _, _) = pair(tmp_path, held)
    how, detail = compare(v, v2, scored=True)
    assert how == "differs" and "verdict pass -> hold" in detail, detail
    assert "rule domain_ppl at most 1.05x dapt's: pass -> hold" in detail


@pytest.mark.parametrize("key, value", [("artifact_sha256", "b" * 64), ("task_sha256", {"ratchet_domain_ppl": "u"}),
                                        ("eval_params", {"confidence": 0.9, "dtype": "float32", "batch_size": 16})])
def test_another_model_other_documents_or_other_settings_differ(tmp_path, key, value):
    (v, _, _), (v2, _, _) = pair(tmp_path, lambda v: v.update({key: value}), ppl=RECORDED)
    assert compare(v, v2, scored=True) == ("differs", key)


def test_a_metric_without_a_tolerance_must_be_equal(tmp_path):
    def extra(v):
        v["metrics"]["made_up_metric"] = 0.51
        v["directions"]["made_up_metric"] = "lower"

    (v, _, _), (v2, _, _) = pair(tmp_path, extra, ppl=RECORDED)
    recorded = json.loads(v.read_text())
    recorded["metrics"]["made_up_metric"] = 0.5
    v.write_text(json.dumps(recorded))
    how, detail = compare(v, v2, scored=True)
    assert how == "differs" and "made_up_metric 0.5 -> 0.51 (no tolerance for it in verify_repro.TOLERANCE" in detail


def test_a_gate_metrics_file_keeps_its_pass_flag(tmp_path):
    (_, _, metrics), (_, _, metrics2) = pair(tmp_path, ppl=RECORDED)
    flipped = {**json.loads(metrics2.read_text()), "passed": 0}
    metrics2.write_text(json.dumps(flipped))
    how, detail = compare(metrics, metrics2, scored=True)
    assert how == "differs" and detail.startswith("passed 1 -> 0"), detail


def test_every_metric_a_gate_can_read_has_a_tolerance():
    missing = sorted(set(scores.METRICS) - set(verify_repro.TOLERANCE))
    assert not missing, f"add {missing} to verify_repro.TOLERANCE (measured as its comment says)"
    assert all(kind in ("relative", "absolute") and amount >= 0 for kind, amount in verify_repro.TOLERANCE.values())


@pytest.mark.integration  # runs lm-eval
def test_on_one_machine_bf16_scoring_repeats_bit_for_bit_after_other_work_and_in_another_order(
        tiny_base, prepared, tiny_params_file):
    """The premise of the tolerances: on the same machine, with the same threads and batch size, a rerun scores
    every document the same, whatever was scored before it in the process and in which order the tasks come."""
    from ratchet.core import params
    from ratchet.eval.evaluate import run_suite, task_data

    from ..conftest import ROOT

    cfg = params.load(tiny_params_file, "eval")[0].model_copy(update={"dtype": "bfloat16"})
    tasks = task_data(str(prepared), str(ROOT / "data/eval"), cfg)
    ppl = {t: tasks[t] for t in ("ratchet_domain_ppl", "ratchet_general_ppl", "ratchet_stereotype_pairs")}
    first = run_suite("hf", str(tiny_base), str(prepared), cfg, tasks=ppl)
    run_suite("hf", str(tiny_base), str(prepared), cfg.model_copy(update={"batch_size": 3}),
              tasks={"ratchet_domain_ppl": tasks["ratchet_domain_ppl"]})  # other work, other batches, in between
    again = run_suite("hf", str(tiny_base), str(prepared), cfg, tasks=dict(reversed(list(copy.deepcopy(ppl).items()))))
    assert first["scores"] == again["scores"] and first["metrics"] == again["metrics"]
