"""End to end: `dvc repro` of the whole pipeline on the tiny profile, in a copy of the repo."""
from __future__ import annotations

import json
import re

import pytest
import yaml

from ratchet.core import audit_log
from ratchet.core.io import read_json, sha256_tree

from .conftest import copy_repo, run
from .reporting.test_report import check_in_browser

pytestmark = pytest.mark.integration

STAGES = {"base", "prepare", "validate", "datasheets", "replay", "gate_champion", "gate_shipped", "gate_base", "dapt", "gate_dapt", "fisher", "sft",
          "gate_sft", "distill", "gate_student", "quantize", "gate_onnx", "audit"}
REPORTS = {
    "data/validation.json", "gates/champion.json", "gates/shipped.json", "metrics/shipped.json", "gates/dapt.json",
    "gates/base.json", "metrics/base.json",
    "gates/sft.json", "gates/student.json",
    "gates/onnx.json", "metrics/champion.json", "metrics/dapt.json", "metrics/sft.json", "metrics/student.json",
    "metrics/onnx.json", "train/dapt/metrics.json", "train/sft/metrics.json", "train/distill/metrics.json",
    "quantize.json",
    "summary.json", "summary.md", "annex_iv.md", "annex_iv.html", "report.html", "governance.yaml", "audit/log.jsonl",
    "data/validation.md", "data/pii.json",
    *(f"data/datasheets/{role}.{ext}" for role in ("domain", "sft", "general") for ext in ("md", "json")),
    *(f"gates/{model}.md" for model in ("champion", "shipped", "base", "dapt", "sft", "student", "onnx")),
}


FIRST_RUN: dict[str, str] = {}


def ran(output: str) -> list[str]:
    return re.findall(r"Running stage '([\w@]+)'", output)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = copy_repo(tmp_path_factory.mktemp("repo"))
    first = run(["dvc", "repro"], repo)
    FIRST_RUN["log"] = first.stdout + first.stderr
    order = ran(first.stdout)
    assert set(order) == STAGES and len(order) == len(STAGES)
    chain = ["prepare", "validate", "dapt", "gate_dapt", "sft", "gate_sft", "distill", "gate_student", "quantize",
             "gate_onnx", "audit"]
    assert [s for s in order if s in chain] == chain
    return repo


def test_repro_writes_every_artifact_and_report(repo):
    reports = {p.relative_to(repo / "reports").as_posix() for p in (repo / "reports").rglob("*") if p.is_file()}
    plots = {r for r in reports if "/plots/metrics/" in r}
    assert reports - plots == REPORTS
    for stage in ("dapt", "sft", "distill"):  # DVCLive's files: one plot per value the loop logs, every step
        logged = json.loads((repo / f"reports/train/{stage}/metrics.json").read_text())
        assert {"loss", "lr", "grad_norm", "step"} <= set(logged)
        assert {r for r in plots if r.startswith(f"train/{stage}/")} == {
            f"train/{stage}/plots/metrics/{k}.tsv" for k in logged if k != "step"}
    for model in ("base", "dapt", "student"):
        assert {p.name for p in (repo / "models" / model).iterdir()} == {
            "config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "special_tokens_map.json", "chat_template.jinja", "lineage.json", "README.md"}
    assert {"adapter_config.json", "adapter_model.safetensors", "lineage.json"} <= {
        p.name for p in (repo / "models/sft").iterdir()}
    assert {"model.onnx", "config.json", "tokenizer.json", "lineage.json"} <= {
        p.name for p in (repo / "models/onnx").iterdir()}
    assert not list((repo / "models").glob(".*tmp*")), "no scratch folders are left behind"


def test_every_gate_passed_and_says_its_numbers_are_not_real(repo):
    """Under the tiny profile's rules (tests/tiny_params.yaml), which a random 4-layer model can meet; params.yaml's
    own rules are tested on scores made to sit at their limits (tests/eval/test_gates.py)."""
    for model in ("dapt", "sft", "student", "onnx"):
        v = read_json(repo / f"reports/gates/{model}.json")
        assert v["verdict"] == "pass", v["reason"]
        assert v["real"] is False and "not real" in v["note"]
        assert v["findings"] and all(f["passed"] for f in v["findings"])
    summary = (repo / "reports/summary.md").read_text()
    assert "not real results" in summary
    # forgetting against the base and the champion, and per source (backward transfer)
    kept = summary[summary.index("What each model kept"):]
    dapt_row = next(line for line in kept.splitlines() if line.startswith("| dapt |"))
    gates = {m: read_json(repo / f"reports/gates/{m}.json") for m in ("champion", "dapt")}
    ratio = gates["dapt"]["metrics"]["general_ppl"] / gates["champion"]["metrics"]["general_ppl"]
    assert f"| {ratio:.3f}x |" in dapt_row and "domain[seed] vs champion" in kept
    # every model's answer to the first held-out questions, side by side, in the summary and each verdict
    times = read_json(repo / "reports/summary.json")["gate_time_s"]
    assert all(times[model] > 0 for model in ("champion", "dapt", "sft", "student", "onnx"))
    assert f"Gate time: {sum(times.values()):.0f} s in all (" in summary
    # (the tiny profile's 6 held-out questions, then 3 closed-book ones on the seed's training documents, which
    # the references and the shipped file answer: no other model's rules read those answers)
    questions = read_json(repo / "reports/summary.json")["questions"]
    assert [q["kind"] for q in questions] == ["held-out"] * 6 + ["knowledge"] * 3
    assert all(" ".join(q["question"].split()) in " ".join(summary.split()) for q in questions)
    answers = summary[summary.index(questions[0]["question"]):]
    for model, n in (("base", 9), ("sft", 6), ("student", 6), ("onnx", 9)):
        assert answers.count(f"\n- {model}: ") == n, model
    # dapt's rules read no answers: its gate generates none, and says so
    assert "\n- dapt: " not in answers
    assert "ratchet_answers" in read_json(repo / "reports/gates/dapt.json")["not_scored"]
    sft = (repo / "reports/gates/sft.md").read_text()
    assert sft.count("- reference answer: ") == 6 and sft.count("\n- base: ") == 6
    assert "| base | " in sft and "key facts gained / lost / alike" in sft  # question by question
    onnx = read_json(repo / "reports/gates/onnx.json")["per_question"]["base"]
    assert sum(onnx["key_facts"]["seed"].values()) == len(read_json(repo / "reports/gates/onnx.json")["scores"][
        "ratchet_knowledge_answers"])
    log = audit_log.entries(repo / "reports/audit/log.jsonl")
    assert [e["event"] for e in log] == ["data_gate", "gate", "gate", "gate", "gate"]
    assert audit_log.verify(repo / "reports/audit/log.jsonl") == []


def test_the_log_is_one_line_per_event_without_progress_bars(repo):
    log = FIRST_RUN["log"]
    for bar in ("it/s]", "%|", "Calculating Metrics", "Running loglikelihood"):
        assert bar not in log, f"a progress bar ({bar!r}) in the dvc repro log"
    assert "[gate] dapt: pass" in log and "[dapt] step" in log


def test_int8_onnx_model_loads_and_generates_with_optimum(repo):
    import torch
    from optimum.onnxruntime import ORTModelForCausalLM

    from ratchet.models.modeling import load_tokenizer

    model = ORTModelForCausalLM.from_pretrained(repo / "models/onnx")
    tok = load_tokenizer(repo / "models/onnx")
    ids = tok("def add(a, b):", return_tensors="pt").input_ids
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=5, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 5
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(repo / "models/onnx/model.onnx")).graph
    ops = {n.op_type for n in graph.node}
    assert {"MatMulNBits", "GatherBlockQuantized"} <= ops, "weights, output head and embedding must be quantized"
    vocab, hidden = (read_json(repo / "models/onnx/config.json")[k] for k in ("vocab_size", "hidden_size"))
    fp32 = [i.name for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT
            and numpy_helper.to_array(i).size >= vocab * hidden]  # per-block scales are 1/block_size of that
    assert fp32 == [], f"a float copy of the vocabulary matrix is left: {fp32}"
    head = [n for n in graph.node if n.op_type == "MatMulNBits" and any(a.name == "N" and a.i == vocab for a in n.attribute)]
    gather = [n for n in graph.node if n.op_type == "GatherBlockQuantized"]
    assert len(head) == 1 and gather[0].input[0] == head[0].input[1], "embedding and head share one int8 matrix"
    scales = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Unsqueeze"}
    assert scales.get(gather[0].input[2]) == head[0].input[2], "and one copy of its scales"
    parity = read_json(repo / "reports/quantize.json")
    assert parity["passed"] and parity["int8_mb"] < parity["fp32_mb"] and parity["tokens"] >= 64


def test_dvc_metrics_show_lists_the_gate_metrics(repo):
    out = run(["dvc", "metrics", "show", "--json"], repo).stdout
    flat = json.dumps(json.loads(out))
    for model in ("champion", "shipped", "base", "dapt", "sft", "student", "onnx"):
        assert f"reports/metrics/{model}.json" in flat
    assert "domain_ppl" in flat and "general_ppl" in flat


def test_second_repro_is_a_no_op(repo):
    again = run(["dvc", "repro"], repo)
    assert ran(again.stdout) == []


def lineage(repo, *args):
    return run(["python", "-m", "ratchet.cli", "lineage", *args], repo, check=False)


def test_lineage_traces_the_shipped_model_to_the_raw_files_and_names_every_mismatch(repo):
    out = lineage(repo, "models/onnx/model.onnx")  # a file inside a model folder stands for the folder
    assert out.returncode == 0, out.stdout + out.stderr
    raw = sorted(p.relative_to(repo).as_posix() for p in (repo / "data/seed").glob("*/*.jsonl"))
    for path in ["models/onnx", "models/student", "models/sft", "models/dapt", "models/base", "data/replay",
                 "data/prepared", *raw]:
        assert f"{path}  [" in out.stdout, f"{path} missing from the chain"
    assert "gate onnx: pass" in out.stdout and "source: random weights" in out.stdout
    assert "every hash agrees" in out.stdout

    # a raw seed file edited after prepare read it: named by the manifest's hash and by dvc.lock
    seed = repo / raw[0]
    original = seed.read_bytes()
    try:
        seed.write_bytes(original + b"\n")
        out = lineage(repo, "models/onnx", "--json")
        assert out.returncode == 1
        found = json.loads(out.stdout)["problems"]
        assert f"data/prepared: raw input {raw[0]} changed since prepare read it" in found
        assert any(p.startswith("data/prepared: dvc.lock stage prepare: changed deps data/seed") for p in found)
    finally:
        seed.write_bytes(original)

    # the audit log's tail cut off (its chain is still intact): the shipped model's gate event is gone
    log = repo / "reports/audit/log.jsonl"
    entries = log.read_bytes()
    try:
        log.write_bytes(b"".join(entries.splitlines(keepends=True)[:-1]))
        out = lineage(repo, "models/onnx")
        assert out.returncode == 1
        assert "models/onnx: no onnx gate event in reports/audit/log.jsonl scored this content" in out.stdout
        assert "models/student: no" not in out.stdout
    finally:
        log.write_bytes(entries)
    assert lineage(repo, "models/onnx").returncode == 0


def test_verify_repro_reruns_a_stage_aside_and_finds_it_reproduced(repo):
    before = run(["git", "worktree", "list"], repo).stdout
    out = run(["python", "-m", "ratchet.cli", "verify-repro", "replay"], repo, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "replay: " in out.stdout and "0 differ: reproduced" in out.stdout
    assert "identical data/replay/manifest.json" in out.stdout

    # training stages: the same weights on this machine, up to the clock readings in their lineage.json; sft's
    # adapter_config.json too, whose module list peft writes in hash order (each process its own)
    for stage, weights in (("dapt", "models/dapt/model.safetensors"),
                           ("sft", "models/sft/adapter_model.safetensors")):
        out = run(["python", "-m", "ratchet.cli", "verify-repro", stage], repo, check=False)
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"identical {weights}" in out.stdout
        assert f"clock     {weights.rsplit('/', 1)[0]}/lineage.json" in out.stdout

    # an output edited since the stage ran: refused, since the workspace no longer holds what dvc.lock records
    manifest = repo / "data/replay/manifest.json"
    original = manifest.read_bytes()
    try:
        record = json.loads(original)
        record["seed"] += 1
        manifest.write_text(json.dumps(record))
        out = run(["python", "-m", "ratchet.cli", "verify-repro", "replay"], repo, check=False)
        assert out.returncode == 2 and "out of date with dvc.lock" in out.stderr  # refused: dvc sees the edit
    finally:
        manifest.write_bytes(original)
    assert run(["git", "worktree", "list"], repo).stdout == before  # the scratch worktree is gone


def stale(repo) -> set[str]:
    """Stages `dvc status` names as changed (their own deps, not what follows from them)."""
    out = json.loads(run(["dvc", "status", "--json"], repo).stdout or "{}")
    return set(out)


@pytest.mark.parametrize("module, expected", [
    ("ratchet/data/ingest.py", set()),
    ("ratchet/reporting/datasheet.py", {"datasheets"}),
    ("ratchet/models/train.py", {"dapt", "sft", "distill"}),
])
def test_editing_a_module_makes_stale_only_the_stages_that_import_it(repo, module, expected):
    path = repo / module
    original = path.read_text()
    try:
        path.write_text(original + "\n# an edit\n")
        assert stale(repo) == expected
    finally:
        path.write_text(original)
    assert stale(repo) == set()


def test_changing_one_param_reruns_only_what_depends_on_it(repo):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["distill"]["temperature"] = 3.0
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run(["dvc", "repro"], repo)
    assert ran(out.stdout) == ["distill", "gate_student", "quantize", "gate_onnx", "audit"]


def test_the_run_report_shows_every_model_and_lays_out_in_a_browser(repo, tmp_path):
    html = (repo / "reports/report.html").read_text()
    assert "Every gate passed (dapt, sft, student, onnx)" in html and "Tiny test model" in html
    for model in ("base", "dapt", "sft", "student", "onnx"):
        assert f'<h3 id="gate-{model}">' in html or model == "base"
        assert f"<td><code>models/{model}</code></td>" in html
    check_in_browser(html, tmp_path, {"fig-metrics", "fig-curves", "fig-funnel"})


def test_a_failing_gate_stops_the_pipeline_and_is_logged(repo):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["gates"]["onnx"] = [{"metric": "domain_ppl", "max": 1.0}]  # no model reaches perplexity 1
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo / "reports/summary.md").unlink()
    out = run(["dvc", "repro"], repo, check=False)
    assert out.returncode != 0
    assert ran(out.stdout) == ["gate_onnx"]
    assert "gate onnx: FAILED: domain_ppl" in out.stdout + out.stderr
    assert not (repo / "reports/summary.md").exists(), "audit must not run after a failed gate"
    verdict = read_json(repo / "reports/gates/onnx.json")
    assert verdict["verdict"] == "fail" and "domain_ppl <= 1" in verdict["reason"]
    last = audit_log.entries(repo / "reports/audit/log.jsonl")[-1]
    assert (last["event"], last["model"], last["verdict"]) == ("gate", "onnx", "fail")
    # the audit stage did not run: `ratchet report` draws the page that says why
    (repo / "reports/report.html").unlink()
    run(["python", "-m", "ratchet.cli", "report"], repo)
    html = (repo / "reports/report.html").read_text()
    assert 'id="decision">Stopped: the onnx gate refused the model.' in html and "domain_ppl &lt;= 1" in html


def test_the_audit_stage_fails_on_a_tampered_artifact_and_on_a_tampered_parent(repo):
    cmd = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]["audit"]["cmd"]
    assert run(cmd, repo).returncode == 0
    config, lineage = repo / "models/dapt/config.json", repo / "models/dapt/lineage.json"
    original, original_lineage = config.read_bytes(), lineage.read_bytes()
    try:
        config.write_bytes(original.replace(b'"rms_norm_eps"', b'"rms_norm_eps" ', 1))
        out = run(cmd, repo, check=False)
        assert out.returncode != 0
        assert "models/dapt: content differs from the hash in its lineage.json" in out.stderr
        assert "models/sft: parent dapt (models/dapt) changed since this artifact was made" in out.stderr
        # a parent swapped for another consistent one (its lineage rewritten to match) is still caught by its children
        record = json.loads(original_lineage)
        record["artifact"]["sha256"] = sha256_tree(repo / "models/dapt")
        lineage.write_text(json.dumps(record))
        out = run(cmd, repo, check=False)
        assert out.returncode != 0 and "models/dapt: content differs" not in out.stderr
        assert "models/sft: parent dapt (models/dapt) changed" in out.stderr
        assert "models/student: parent dapt (models/dapt) changed" in out.stderr
    finally:
        config.write_bytes(original)
        lineage.write_bytes(original_lineage)
    assert run(cmd, repo).returncode == 0
