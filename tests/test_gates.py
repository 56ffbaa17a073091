from stages.models.gates import decide, require_pass
from stages.core.io import write_json
from stages.core.params import GateRule

import pytest


def test_gate_passes_within_bounds_and_fails_outside_with_a_reason():
    rules = [GateRule(metric="domain_ppl", max_ratio=0.98, ref="champion"), GateRule(metric="general_ppl", max=50)]
    refs = {"champion": {"domain_ppl": 20.0}}
    ok = decide({"domain_ppl": 19.0, "general_ppl": 40.0}, rules, refs)
    assert all(f["passed"] for f in ok)
    bad = decide({"domain_ppl": 19.9, "general_ppl": 60.0}, rules, refs)
    assert [f["passed"] for f in bad] == [False, False]
    assert "0.98" in bad[0]["reason"] and "champion" in bad[0]["reason"]
    assert "max 50" in bad[1]["reason"]


def test_gate_fails_when_a_metric_or_its_reference_is_missing_or_nan():
    rules = [GateRule(metric="domain_ppl", max_ratio=1.0, ref="sft")]
    assert not decide({}, rules, {"sft": {"domain_ppl": 3.0}})[0]["passed"]
    assert not decide({"domain_ppl": float("nan")}, rules, {"sft": {"domain_ppl": 3.0}})[0]["passed"]
    assert not decide({"domain_ppl": 1.0}, rules, {})[0]["passed"]


def test_downstream_stage_refuses_a_failed_or_missing_verdict(tmp_path):
    with pytest.raises(SystemExit, match="no gate verdict"):
        require_pass(tmp_path / "none.json")
    write_json(tmp_path / "v.json", {"verdict": "fail", "reason": "domain_ppl too high"})
    with pytest.raises(SystemExit, match="domain_ppl too high"):
        require_pass(tmp_path / "v.json")
    write_json(tmp_path / "v.json", {"verdict": "pass"})
    assert require_pass(tmp_path / "v.json")["verdict"] == "pass"


def test_steps_each_allowed_by_their_parent_rule_cannot_add_up_to_a_regression():
    """The default rules of params.yaml: every step at the edge of its parent-to-child allowance is refused
    by the rules against the champion's teacher and shipped model."""
    from stages.core import params

    from .conftest import ROOT

    gates = params.load(ROOT / "params.yaml", "gates")[0]

    def allowed(model, ref):  # the largest ratio a parent-to-child rule lets through
        edge = min(r.max_ratio for r in gates.rules(model) if r.ref == ref and r.metric == "domain_ppl")
        return edge * (1 - 1e-9)  # just inside it, whatever the float rounding of the ratio

    champion = shipped = {"domain_ppl": 100.0, "general_ppl": 100.0}
    dapt = {"domain_ppl": 100.0 * 0.97, "general_ppl": 100.0}  # a small domain gain: passes its gate
    sft = {m: v * allowed("sft", "dapt") for m, v in dapt.items()}  # loses it all back, within 1.05x of dapt
    student = {m: v * allowed("student", "sft") for m, v in sft.items()}
    onnx = {m: v * allowed("onnx", "student") for m, v in student.items()}
    refs = {"champion": champion, "shipped": shipped, "dapt": dapt, "sft": sft, "student": student}

    def verdict(model, metrics):
        return decide(metrics, gates.rules(model), refs)

    assert all(f["passed"] for f in verdict("dapt", dapt))
    assert all(f["passed"] for f in verdict("student", student)), "each step is within its parent's allowance"
    sft_failed = [f for f in verdict("sft", sft) if not f["passed"]]
    assert [f["ref"] for f in sft_failed] == ["champion"], "sft is 1.02x the champion on the domain"
    onnx_failed = [f for f in verdict("onnx", onnx) if not f["passed"]]
    assert {f["ref"] for f in onnx_failed} == {"shipped"}, "the shipped model regressed against the last one"
