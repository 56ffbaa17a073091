"""Training stages learn: loss falls, LoRA weights change, the frozen base does not."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from ratchet.core import params
from ratchet.core.history import read_history
from ratchet.core.io import read_json, sha256_tree, write_json
from ratchet.models import modeling
from ratchet.models.batches import IGNORE, chat_example, collate, conversations
from ratchet.models import dapt, sft
from ratchet.models.student import layer_similarity, layers_to_keep, student_from

from ..conftest import (ROOT, at_work, env, run_stage as launch, stage_argv, stage_cmd, tiny_params, with_lineage,
                        write_params)

MODEL_FILES = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
               "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja", "lineage.json", "README.md"}


def falling(history: list[dict], key: str = "loss") -> bool:
    first, last = [h[key] for h in history[:3]], [h[key] for h in history[-3:]]
    return all(torch.isfinite(torch.tensor(first + last))) and sum(last) / 3 < sum(first) / 3


def test_a_budget_in_epochs_follows_the_drops_size_capped_by_steps(capsys):
    """dapt.epochs of the default params over the seed's 359 new blocks at 3 new rows a step: 120 steps; a drop ten
    times the size stops at the cap; epochs 0 keeps the steps as written; the warm-up never outlasts the steps."""
    from ratchet.models.train import in_epochs

    cfg = params.load(ROOT / "params.yaml", "dapt")[0]
    assert cfg.epochs == 1 and in_epochs("dapt", cfg, 359, 3).steps == 120
    assert "1 epochs of 359 new units at 3 a step: 120 steps" in capsys.readouterr().out
    assert in_epochs("dapt", cfg, 3590, 3).steps == cfg.steps and "capped by steps" in capsys.readouterr().out
    assert in_epochs("dapt", cfg.model_copy(update={"epochs": 0.0}), 359, 3) == cfg.model_copy(update={"epochs": 0.0})
    short = in_epochs("dapt", cfg.model_copy(update={"epochs": 0.01}), 359, 3)
    assert short.steps == 2 and short.warmup_steps == 2


def test_dapt_learns_and_writes_a_complete_model_folder(work, tiny_base, dapt_model):
    assert {p.name for p in dapt_model.iterdir()} == MODEL_FILES
    assert falling(read_history(work / "train/dapt"))
    before, after = load_file(tiny_base / "model.safetensors"), load_file(dapt_model / "model.safetensors")
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) == len(before), "full-parameter DAPT must update every weight"
    lineage = read_json(dapt_model / "lineage.json")
    assert lineage["artifact"]["sha256"] == sha256_tree(dapt_model)
    assert lineage["parents"]["start"]["sha256"] == read_json(tiny_base / "lineage.json")["artifact"]["sha256"]
    assert lineage["real"] is False  # descends from the tiny test model


def test_dapt_on_two_processes_matches_one_process_and_only_rank_0_writes(work, tiny_base, dapt_model, tmp_path):
    """torchrun starts two CPU processes (DDP over gloo): each trains on half of every batch, the averaged
    gradients make the same steps as one process on the whole batch, and one complete folder is written."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out, history = tmp_path / "dapt", tmp_path / "train" / "dapt"
    argv = stage_argv("dapt", tmp_path, work / "params.yaml",
                      {**at_work(work, base=tiny_base, dapt=out), "reports/train": tmp_path / "train"})
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                        "127.0.0.1", "--master_port", str(port), "-m", "stages", "dapt", *argv],
                       cwd=ROOT, env={**env(), "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "2 processes (multi_cpu, cpu): 1 of each batch's 2 rows per process" in r.stdout
    assert r.stdout.count("[dapt] wrote") == 1, "only rank 0 writes"
    assert {p.name for p in tmp_path.iterdir()} == {"dapt", "train"}, "no checkpoint or scratch left"
    assert {p.name for p in history.parent.iterdir()} == {"dapt"}
    assert {p.name for p in out.iterdir()} == MODEL_FILES

    one, two = read_history(work / "train/dapt"), read_history(history)
    assert [h["step"] for h in two] == [h["step"] for h in one]
    assert max(abs(a["loss"] - b["loss"]) / a["loss"] for a, b in zip(one, two)) < 0.01
    start, w1, w2 = (load_file(m / "model.safetensors") for m in (tiny_base, dapt_model, out))
    moved = sum(float((w1[k] - start[k]).float().norm() ** 2) for k in w1) ** 0.5
    apart = sum(float((w2[k] - w1[k]).float().norm() ** 2) for k in w1) ** 0.5
    assert moved > 0 and apart < 0.02 * moved, (apart, moved)


def test_dapt_rehearses_the_champions_own_text_and_ewc_holds_the_weights(work, tiny_base, sft_adapter):
    """replay_source champion: the champion writes its rehearsal blocks and the KL to its cached distribution
    starts near zero (the model is the champion at step 1; a cache misaligned by one position would not be);
    EWC with a large lambda keeps the weights that matter (by F) much nearer the champion than no EWC."""
    run, cfg = params.load(work / "params.yaml", "run", "dapt")
    cfg = cfg.model_copy(update={"steps": 6, "replay_source": "champion", "rehearsal_blocks": 4,
                                 "replay_fraction": 0.5})
    start = load_file(tiny_base / "model.safetensors")
    moved = {}
    for lam in (0.0, 1e4):
        model, _, history, record = dapt.train(cfg.model_copy(update={"ewc_lambda": lam}), run, tiny_base,
                                               work / "replay", work / "fisher")
        assert record["rehearsal"]["model_generated"] and record["rehearsal"]["blocks"] == 4
        assert history[0]["kl"] < 0.05 < history[0]["ce"], history[0]
        assert ("ewc" in history[0]) == (lam > 0) and ("ewc" in record) == (lam > 0)
        fisher = load_file(work / "fisher/fisher.safetensors")
        weights = dict(model.named_parameters())
        moved[lam] = sum((fisher[k] * (weights[k].detach() - start[k]).pow(2)).sum().item() for k in fisher)
    assert moved[1e4] < 0.5 * moved[0.0], moved  # the Fisher-weighted distance EWC penalises
    with pytest.raises(SystemExit, match="--fisher"):
        dapt.train(cfg.model_copy(update={"ewc_lambda": 1.0}), run, tiny_base, work / "replay")


def test_fisher_is_nonnegative_and_covers_every_lora_target(work, sft_adapter):
    f = load_file(work / "fisher" / "fisher.safetensors")
    targets = tiny_params()["sft"]["target_modules"]
    assert {k.split(".")[-2] for k in f} == set(targets)
    assert all((v >= 0).all() for v in f.values()) and sum(v.sum() for v in f.values()) > 0


def test_sft_trains_lora_only_and_learns(work, dapt_model, sft_adapter):
    prepared = work / "prepared"
    assert {"adapter_config.json", "adapter_model.safetensors", "lineage.json", "README.md"} <= {p.name for p in sft_adapter.iterdir()}
    assert "[More Information Needed]" not in (sft_adapter / "README.md").read_text()
    history = read_history(work / "train/sft")
    # dapt moved away from the champion, so the penalty is positive from the first step on
    assert all(h["ewc"] > 0 for h in history)
    # Learning: on fixed training examples, dapt + adapter beats dapt alone.
    from peft import PeftModel

    from ratchet.models.losses import masked_lm_loss

    tok = modeling.load_tokenizer(dapt_model)
    rows = [chat_example(tok, c, 64) for c in conversations(prepared / "sft" / "train.jsonl")[:16]]
    batch = collate(rows, tok.pad_token_id)

    def loss_of(model):
        with torch.no_grad():
            return masked_lm_loss(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                                  batch["labels"]).item()

    before = loss_of(modeling.load_model(dapt_model))
    after = loss_of(PeftModel.from_pretrained(modeling.load_model(dapt_model), sft_adapter))
    assert after < before - 0.1, (before, after)  # LoRA B starts at 0: before is the untrained model
    adapter = load_file(sft_adapter / "adapter_model.safetensors")
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b), "LoRA B starts at zero; training must move it"
    config = json.loads((sft_adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == dapt_model.as_posix()


def test_sft_on_an_8bit_base_learns_and_4bit_is_refused_on_cpu(work, tiny_base, dapt_model, sft_adapter):
    import bitsandbytes as bnb

    run, cfg = params.load(work / "params.yaml", "run", "sft")
    cfg = cfg.model_copy(update={"steps": 8, "base_bits": 8})
    model, _, history, _ = sft.train(cfg, run, dapt_model, tiny_base, work / "fisher", str(work / "replay"))
    assert any(isinstance(m, bnb.nn.Linear8bitLt) for m in model.modules()), "the frozen base is held in 8 bits"
    assert falling(history) and all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        sft.train(cfg.model_copy(update={"base_bits": 4}), run, dapt_model, tiny_base, work / "fisher",
                  str(work / "replay"))


def test_sft_moves_only_lora_weights_in_memory(work, tiny_base, dapt_model):
    """After training, every weight of the model that is not LoRA equals dapt's: the base stays frozen."""
    run, cfg = params.load(work / "params.yaml", "run", "sft")
    cfg = cfg.model_copy(update={"steps": 4})
    model, _, _, _ = sft.train(cfg, run, dapt_model, tiny_base, work / "fisher", str(work / "replay"))
    frozen = {n.removeprefix("base_model.model.").replace(".base_layer", ""): p
              for n, p in model.named_parameters() if "lora_" not in n}
    lora = {n: p for n, p in model.named_parameters() if "lora_" in n}
    dapt_weights = load_file(dapt_model / "model.safetensors")
    assert set(frozen) == set(dapt_weights)
    assert all(torch.equal(p.detach(), dapt_weights[n]) for n, p in frozen.items())
    assert all(not p.requires_grad for p in frozen.values()) and all(p.requires_grad for p in lora.values())
    assert any(p.abs().sum() > 0 for n, p in lora.items() if "lora_B" in n), "training moved LoRA B off zero"


@pytest.mark.integration  # runs lm-eval or trains
def test_sft_loss_falls_on_the_assistant_reply_only(tiny_base):
    tok = modeling.load_tokenizer(tiny_base)
    conv = [{"role": "system", "content": "You answer briefly."},
            {"role": "user", "content": "What does os.path.join do?"},
            {"role": "assistant", "content": "It joins path components with the separator."}]
    ids, labels = chat_example(tok, conv, 256)
    learned = tok.decode(ids[labels != IGNORE])
    assert learned.startswith("It joins path components with the separator.")
    assert learned.replace("It joins path components with the separator.", "").strip() in ("<|im_end|>", "")
    assert (labels[: (labels != IGNORE).nonzero()[0, 0]] == IGNORE).all(), "prompt tokens carry no loss"
    batch = collate([(ids, labels), (ids[:5], ids[:5].clone())], tok.pad_token_id)
    assert (batch["labels"][1, 5:] == IGNORE).all() and (batch["attention_mask"][1, 5:] == 0).all()


def test_distill_builds_a_smaller_student_that_learns(work, student):
    assert {p.name for p in student.iterdir()} == MODEL_FILES
    assert read_json(student / "config.json")["num_hidden_layers"] == 2
    lineage = read_json(student / "lineage.json")
    assert len(lineage["teacher_layers_kept"]) == 2 and lineage["teacher_layers_kept"][-1] == 3
    assert lineage["layer_scores"]["choice"] == "angular" and len(lineage["layer_scores"]["angular_distance"]) == 2
    assert lineage["teacher_cache"]["k"] == 64 and 0 <= lineage["teacher_cache"]["mean_tail_mass"] < 1
    assert lineage["parameters"]["student"] < lineage["parameters"]["teacher"]
    rehearsal, cfg = lineage["rehearsal"], tiny_params()["distill"]
    assert rehearsal["source"] == "teacher" and rehearsal["model_generated"] is True
    assert rehearsal["blocks"] == cfg["teacher_samples"] and rehearsal["tokens"] == cfg["teacher_samples"] * cfg["seq_len"]
    assert falling(read_history(work / "train/distill"))


def test_the_teachers_rehearsal_blocks_are_its_own_seeded_samples(dapt_model):
    """Free text the model samples for rehearsal: full blocks, the same for a seed, other text for another,
    and the caller's random state untouched."""
    from ratchet.models.generation import sample_blocks
    from ratchet.models.rehearsal import teacher_topk

    model, tok = modeling.load_model(dapt_model), modeling.load_tokenizer(dapt_model)
    state = torch.get_rng_state()
    a, none = sample_blocks(model, tok, 3, 16, batch=2, seed=7, temperature=1.0, bf16=True)
    assert torch.equal(torch.get_rng_state(), state) and none is None
    assert a.shape == (3, 16) and (a[:, 0] == tok.eos_token_id).all()
    assert torch.equal(a, sample_blocks(model, tok, 3, 16, batch=2, seed=7, temperature=1.0, bf16=True)[0])
    assert not torch.equal(a, sample_blocks(model, tok, 3, 16, batch=2, seed=8, temperature=1.0, bf16=True)[0])
    assert len({tuple(r.tolist()) for r in a}) == 3
    # without bf16 the model samples itself, and is left in the mode it was in
    model.train()
    b, _ = sample_blocks(model, tok, 3, 16, batch=2, seed=7, temperature=1.0, bf16=False)
    assert b.shape == (3, 16) and model.training
    assert (b[:, 1:] != tok.eos_token_id).all()  # a block never ends early
    # the top-k recorded while sampling is the model's own distribution on the blocks, as a second pass
    # over them finds it (teacher_topk), at the KL term's temperature; the blocks are the same with or without
    same, (idx, logp) = sample_blocks(model, tok, 3, 16, batch=2, seed=7, temperature=1.0, bf16=False, topk=5,
                                      kd_temperature=2.0)
    assert torch.equal(same, b) and idx.shape == logp.shape == (3, 15, 5)
    want_idx, want_logp = teacher_topk(model.eval(), b, 5, 2.0, bf16=False)
    assert torch.equal(idx, want_idx)
    assert torch.allclose(logp.float(), want_logp.float(), atol=2e-3)


def test_distill_with_the_live_teacher_matches_the_cached_one_at_full_width(work, dapt_model, sft_adapter, tmp_path):
    """teacher_topk: 0 runs the teacher every step; a cache as wide as the vocabulary gives the same losses."""
    p = tiny_params()
    p["distill"].update(steps=2, log_every=1)
    histories = {}
    for k in (0, 49152):
        p["distill"]["teacher_topk"] = k
        out = tmp_path / f"student-{k}"
        launch("distill", tmp_path, write_params(tmp_path / "params.yaml", p),
               {**at_work(work, dapt=dapt_model, sft=sft_adapter, student=out),
                "reports/train/distill": tmp_path / f"h-{k}"})
        histories[k] = read_history(tmp_path / f"h-{k}")
        lineage = read_json(out / "lineage.json")
        assert (lineage["teacher_cache"] == {}) == (k == 0)
        # two steps draw two replay rows (batch 2, replay 0.5): the teacher writes those two, not teacher_samples (4)
        assert lineage["rehearsal"]["blocks"] == 2 < p["distill"]["teacher_samples"]
        if k:  # their top-k was recorded as the teacher wrote them: the cache pass ran over the task rows only
            assert lineage["teacher_cache"]["rows_run"] == lineage["teacher_cache"]["rows"] - 2
    live, wide = histories[0][0], histories[49152][0]
    assert wide["ce"] == pytest.approx(live["ce"], rel=1e-3) and wide["kl"] == pytest.approx(live["kl"], rel=2e-2)


def test_the_student_starts_as_exactly_the_teacher_layers_it_claims(dapt_model):
    teacher = modeling.load_model(dapt_model)
    keep = [0, 2]
    student_model = student_from(teacher, keep)
    t, s = teacher.state_dict(), student_model.state_dict()
    for name, w in s.items():
        parts = name.split(".")
        if "layers" in parts:
            at = parts.index("layers") + 1
            parts[at] = str(keep[int(parts[at])])
        assert torch.equal(w, t[".".join(parts)]), name
    assert student_model.config.num_hidden_layers == 2 and len(student_model.model.layers) == 2
    # and not some other layer: layer 1 of the student is teacher layer 2, not 1
    q = "model.layers.1.self_attn.q_proj.weight"
    assert not torch.equal(s[q], t[q])


def test_layer_selection_keeps_the_ends_and_rejects_impossible_students():
    cfg = params.load(ROOT / "params.yaml", "distill")[0]
    first_last = cfg.model_copy(update={"student_layers": 20, "layer_choice": "first_last"})
    assert layers_to_keep(30, first_last)[0] == list(range(10)) + list(range(20, 30))
    assert layers_to_keep(4, cfg.model_copy(update={"student_layers": 2, "keep_layers": [0, 2]}))[0] == [0, 2]
    with pytest.raises(SystemExit, match="student_layers"):
        layers_to_keep(4, cfg.model_copy(update={"student_layers": 4}))


def test_measured_layer_choice_drops_the_layers_that_do_nothing(tiny_base):
    """Make layers 1 and 2 of a 4-layer model the identity: both measures must find and drop exactly them."""
    from ratchet.models.batches import pack

    model = modeling.load_model(tiny_base).eval()
    for i in (1, 2):
        torch.nn.init.zeros_(model.model.layers[i].self_attn.o_proj.weight)
        torch.nn.init.zeros_(model.model.layers[i].mlp.down_proj.weight)
    tok = modeling.load_tokenizer(tiny_base)
    blocks = pack(tok, ["The with statement wraps a block with a context manager's methods."] * 20, 32)
    sim = layer_similarity(model, blocks[:4])
    assert sim["angle"][1, 3] == pytest.approx(0.0, abs=1e-3) and sim["angle"][0, 1] > 0.01
    cfg = params.load(ROOT / "params.yaml", "distill")[0].model_copy(update={"student_layers": 2})
    for choice in ("angular", "block_influence"):
        keep, scores = layers_to_keep(4, cfg.model_copy(update={"layer_choice": choice}), sim)
        assert keep == [0, 3] and scores["choice"] == choice
    # and a real choice: with other layers idle, angular moves its block with them
    model = modeling.load_model(tiny_base).eval()
    for i in (0, 1):
        torch.nn.init.zeros_(model.model.layers[i].self_attn.o_proj.weight)
        torch.nn.init.zeros_(model.model.layers[i].mlp.down_proj.weight)
    keep, scores = layers_to_keep(4, cfg.model_copy(update={"layer_choice": "angular"}),
                                          layer_similarity(model, blocks[:4]))
    assert keep == [2, 3] and scores["block_start"] == 0


def test_quantize_refuses_a_model_that_fails_parity(work, student, prepared, tmp_path):
    p = tiny_params()
    # 4-bit weights in blocks of 128 cannot keep every argmax and the NLL of a random model
    p["quantize"].update(weight_bits=4, block_size=128, min_top1_agreement=1.0, max_nll_increase=0.0)
    out, report = tmp_path / "onnx", tmp_path / "quantize.json"
    with pytest.raises(SystemExit, match="fails parity"):
        launch("quantize", tmp_path, write_params(tmp_path / "params.yaml", p),
               {**at_work(work, student=student, onnx=out), "data/prepared": prepared, "reports/quantize.json": report})
    assert not out.exists(), "no model is written when parity fails"
    check = read_json(report)
    assert check["passed"] is False and (check["top1_agreement"] < 1.0 or check["nll_increase"] > 0.0)


def test_a_stage_refuses_to_train_behind_a_failed_gate(work, tiny_base, prepared):
    write_json(work / "fail.json", {"verdict": "fail", "reason": "domain_ppl too high"})
    with pytest.raises(SystemExit, match="domain_ppl too high"):
        launch("dapt", work, work / "params.yaml",
               {**at_work(work, base=tiny_base, dapt=work / "never"), "reports/data/validation.json": work / "fail.json",
                "reports/train/dapt": work / "never-history"})
    assert not (work / "never").exists()


def crash_at_step_5(run_stage, out, monkeypatch) -> None:
    """Run a training stage that is killed at step 5 (0-based) of its run; checkpoints stay as it left them."""
    from ratchet.models import train

    lr_at = train.lr_at

    def crashing(step, *a):
        if step == 5:
            raise KeyboardInterrupt("simulated crash")
        return lr_at(step, *a)

    with monkeypatch.context() as m:
        m.setattr(train, "lr_at", crashing)
        with pytest.raises(KeyboardInterrupt):
            run_stage(out)
    assert not out.exists(), "a crashed stage leaves no artifact that looks whole"


@pytest.mark.parametrize("stage", ["dapt", "sft", "distill"])
def test_a_crashed_run_resumes_from_its_checkpoint_and_matches_an_uninterrupted_one(
        stage, work, tiny_base, dapt_model, sft_adapter, tmp_path, monkeypatch):
    """Killed at step 5 of 6, checkpoints every 2 steps: the rerun resumes at step 4 and ends with the very
    weights and history of a run never stopped (sft's LoRA dropout draws the same masks: RNG state is saved)."""
    from ratchet.models.train import checkpoint_dir

    p = tiny_params()
    p[stage].update(steps=6, checkpoint_every=2, log_every=2)
    params_file = write_params(tmp_path / "params.yaml", p)
    assert stage != "sft" or p["sft"]["lora_dropout"] > 0
    weights = "adapter_model.safetensors" if stage == "sft" else "model.safetensors"
    made = {"dapt": "models/dapt", "sft": "models/sft", "distill": "models/student"}[stage]

    def run_stage(out):
        launch(stage, tmp_path, params_file, {**at_work(work, base=tiny_base, dapt=dapt_model, sft=sft_adapter),
                                              made: out, f"reports/train/{stage}": out.with_name(f"{out.name}-history")})

    run_stage(tmp_path / "whole")
    crash_at_step_5(run_stage, tmp_path / "resumed", monkeypatch)
    assert json.loads((checkpoint_dir(tmp_path / "resumed") / "state.json").read_text())["step"] == 4
    run_stage(tmp_path / "resumed")
    assert not checkpoint_dir(tmp_path / "resumed").exists()
    whole, resumed = (load_file(tmp_path / d / weights) for d in ("whole", "resumed"))
    assert whole.keys() == resumed.keys() and all(torch.equal(whole[k], resumed[k]) for k in whole)
    # the DVCLive files too, byte for byte: written once from the history the checkpoint carried
    whole, resumed = (tmp_path / f"{d}-history" for d in ("whole", "resumed"))
    assert read_history(whole) and sha256_tree(whole) == sha256_tree(resumed)


@pytest.mark.parametrize("damage", ["truncated weights", "flipped bit in the optimizer", "garbled state"])
def test_a_damaged_checkpoint_is_named_and_training_restarts_from_scratch(
        damage, work, tiny_base, tmp_path, monkeypatch, capsys):
    """A checkpoint damaged after it was written is not loaded: the stage names it, starts from step 0, and
    ends with the weights of an uninterrupted run."""
    from ratchet.models.train import checkpoint_dir

    p = tiny_params()
    p["dapt"].update(steps=6, checkpoint_every=2)
    params_file = write_params(tmp_path / "params.yaml", p)

    def run_dapt(out):
        launch("dapt", tmp_path, params_file, {**at_work(work, base=tiny_base, dapt=out),
                                               "reports/train/dapt": out.with_name(f"{out.name}-history")})

    run_dapt(tmp_path / "whole")
    crash_at_step_5(run_dapt, tmp_path / "resumed", monkeypatch)
    ckpt = checkpoint_dir(tmp_path / "resumed")
    if damage == "truncated weights":
        f = ckpt / "trainable.safetensors"
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    elif damage == "flipped bit in the optimizer":
        f = ckpt / "optimizer.pt"
        data = bytearray(f.read_bytes())
        data[len(data) // 2] ^= 0x01
        f.write_bytes(bytes(data))
    else:
        f = ckpt / "state.json"
        f.write_text(f.read_text()[:-40])
    capsys.readouterr()
    run_dapt(tmp_path / "resumed")
    said = capsys.readouterr().out
    assert f"ignoring {ckpt}" in said and "damaged" in said and "starts from step 0" in said
    assert "resuming" not in said
    whole, resumed = (load_file(tmp_path / d / "model.safetensors") for d in ("whole", "resumed"))
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    # the DVCLive files too, byte for byte: written once from the history the checkpoint carried
    whole, resumed = (tmp_path / f"{d}-history" for d in ("whole", "resumed"))
    assert read_history(whole) and sha256_tree(whole) == sha256_tree(resumed)


def test_a_gate_scores_a_model_with_lm_eval_decides_and_logs_no_progress_bars(work, dapt_model, prepared):
    """Through the launcher, as dvc runs it: a process that starts offline and quiet. The reference is
    the same model (the champion stand-in), its per-document scores then made worse or left as they are."""
    from ..conftest import run

    def gate(stage, check=True, **at):
        at = {"data/prepared": prepared, "data/eval": ROOT / "data/eval", "reports/audit/log.jsonl": work / "log.jsonl",
              "models/champion": work / "no-champion", "models/base": dapt_model, **at}
        return run(stage_cmd(stage, work, work / "params.yaml", at), ROOT, check=check)

    def wrote(model: str, verdict: str) -> dict:
        return {f"reports/gates/{model}.json": work / f"{verdict}.json",
                f"reports/metrics/{model}.json": work / f"{verdict}-metrics.json"}

    gate("gate_champion", **wrote("champion", "same"))
    same = read_json(work / "same.json")
    assert same["verdict"] == "reference" and same["scores"]["ratchet_domain_ppl"]
    assert set(same["seconds"]) == {"load", *same["scores"]}  # where a gate's time goes
    reused = gate("gate_shipped", **wrote("shipped", "shipped"), **{"reports/gates/champion.json": work / "same.json"})
    shipped = read_json(work / "shipped.json")
    assert "scores are reused" in reused.stdout + reused.stderr
    assert shipped["reused_from"] == {task: str(work / "same.json") for task in same["scores"]}
    assert shipped["scores"] == same["scores"] and shipped["model"] == "shipped"
    # task by task: a verdict whose domain documents differ lends every other task; domain is scored again
    partial = {**same, "task_sha256": {**same["task_sha256"], "ratchet_domain_ppl": "0" * 64},
               "scores": {**same["scores"], "ratchet_domain_ppl": []}}
    write_json(work / "partial.json", partial)
    gate("gate_shipped", **wrote("shipped", "shipped2"), **{"reports/gates/champion.json": work / "no-such-verdict.json",
                                                           "models/champion/verdicts/onnx.json": work / "partial.json"})
    shipped2 = read_json(work / "shipped2.json")
    assert set(shipped2["reused_from"]) == set(same["scores"]) - {"ratchet_domain_ppl"}
    assert set(shipped2["seconds"]) == {"load", "ratchet_domain_ppl"}  # a reused task costs nothing
    assert list(shipped2["scores"]) == list(same["scores"])
    assert [r["id"] for r in shipped2["scores"]["ratchet_domain_ppl"]] == [
        r["id"] for r in same["scores"]["ratchet_domain_ppl"]]
    assert shipped2["metrics"] == pytest.approx(same["metrics"], rel=1e-5)
    worse = {**same, "scores": {task: [{**r, "ll": r["ll"] * 2} if "ll" in r else r for r in rows]
                                for task, rows in same["scores"].items()}}
    write_json(work / "worse.json", worse)

    def run_gate(ref: str, check=True):
        return gate("gate_dapt", check, **wrote("dapt", "verdict"), **{"reports/gates/champion.json": work / ref,
                                                                       "models/dapt": dapt_model})

    out = run_gate("worse.json")
    verdict = read_json(work / "verdict.json")
    assert verdict["verdict"] == "pass" and verdict["real"] is False
    assert set(verdict["metrics"]) >= {"domain_ppl", "general_ppl"} and verdict["eval_docs"]["ratchet_domain_ppl"] > 0
    assert all(f["resolved"] and f["ci"][1] <= f["limit"] for f in verdict["findings"])
    assert "**Verdict: pass**" in (work / "verdict.md").read_text()
    log = out.stdout + out.stderr
    assert "it/s" not in log and "%|" not in log, log
    failed = run_gate("same.json", check=False)  # the same model cannot be 0.98x itself
    assert failed.returncode != 0 and "gate dapt: FAILED" in failed.stderr
    assert read_json(work / "verdict.json")["verdict"] == "fail"
    assert "**FAIL**" in (work / "verdict.md").read_text()


def test_a_model_with_one_layer_scrambled_fails_its_gate_and_the_intact_one_passes(work, dapt_model, prepared,
                                                                                  tmp_path):
    """One decoder layer's weights shuffled (the same numbers, in the wrong places): scored on the same
    documents as the model it was, every perplexity rule of a shipped model refuses it, the domain rule with a
    resolved interval even on the tiny profile's eight documents."""
    from safetensors.torch import save_file

    from ratchet.eval.evaluate import run_suite
    from ratchet.eval.rules import decide, load_rules

    damaged = tmp_path / "damaged"
    shutil.copytree(dapt_model, damaged)
    weights = load_file(damaged / "model.safetensors")
    g = torch.Generator().manual_seed(0)
    for name in [k for k in weights if k.startswith("model.layers.1.") and weights[k].dim() == 2]:
        w = weights[name]
        weights[name] = w.flatten()[torch.randperm(w.numel(), generator=g)].reshape(w.shape).contiguous()
    save_file(weights, damaged / "model.safetensors", metadata={"format": "pt"})
    with_lineage(damaged)  # a model as a faulty stage could write it, not one edited afterwards

    cfg = params.load(work / "params.yaml", "eval")[0]
    intact = run_suite("hf", str(dapt_model), str(prepared), cfg, eval_sets=str(ROOT / "data/eval"))
    broken = run_suite("hf", str(damaged), str(prepared), cfg, eval_sets=str(ROOT / "data/eval"))
    rules = [r for r in load_rules(ROOT / "params.yaml").rules("onnx")  # params.yaml's, not the tiny profile's
             if r.ref == "shipped" and r.metric.endswith("_ppl")]
    same = decide(intact["scores"], rules, {"shipped": intact["scores"]})
    assert all(f["passed"] for f in same), [f["reason"] for f in same if not f["passed"]]
    worse = decide(broken["scores"], rules, {"shipped": intact["scores"]})
    assert not any(f["passed"] for f in worse), [f["reason"] for f in worse]
    assert all(f["resolved"] for f in worse if f["metric"] == "domain_ppl" and f["source"] is None)


def test_a_model_folder_changed_after_it_was_written_is_refused_by_the_stages_that_read_it(work, dapt_model,
                                                                                          sft_adapter, tmp_path):
    """One byte of the dapt weights changed: sft, distill and the gate each refuse it, naming the folder."""
    from ratchet.eval.evaluate import run_suite

    bad = tmp_path / "dapt"
    shutil.copytree(dapt_model, bad)
    weights = bad / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    modeling.load_model(dapt_model)  # the intact folder loads
    with pytest.raises(SystemExit, match=f"{bad}: its files do not match its lineage.json"):
        launch("sft", tmp_path, work / "params.yaml", {**at_work(work, base=work / "champion", dapt=bad,
                                                                 sft=tmp_path / "sft"),
                                                       "reports/train/sft": tmp_path / "sft-history"})
    with pytest.raises(SystemExit, match=f"{bad}: its files do not match"):
        launch("distill", tmp_path, work / "params.yaml", {**at_work(work, dapt=bad, sft=sft_adapter,
                                                                     student=tmp_path / "student"),
                                                           "reports/train/distill": tmp_path / "d-history"})
    cfg = params.load(work / "params.yaml", "eval")[0]
    with pytest.raises(SystemExit, match=f"{bad}: its files do not match"):
        run_suite("hf", str(bad), str(work / "prepared"), cfg)
    assert not (tmp_path / "sft").exists() and not (tmp_path / "student").exists()


@pytest.mark.parametrize("damage", ["flipped byte", "lineage gone", "truncated, lineage rewritten"])
def test_a_damaged_onnx_file_fails_its_gate_with_the_file_named(damage, work, student, prepared, tmp_path):
    """The shipped ONNX folder damaged after quantize wrote it: a byte flipped in model.onnx is caught by its
    lineage, a folder stripped of its lineage is refused, and a file cut short under a lineage written for it
    (as a faulty stage could) is named when it fails to load."""
    from ratchet.eval.evaluate import run_suite

    out = tmp_path / "onnx"
    launch("quantize", tmp_path, work / "params.yaml", {**at_work(work, student=student, onnx=out),
                                                        "data/prepared": prepared,
                                                        "reports/quantize.json": tmp_path / "q.json"})
    onnx = out / "model.onnx"
    data = bytearray(onnx.read_bytes())
    if damage == "flipped byte":
        data[len(data) // 2] ^= 0x01
        expected = f"{out}: its files do not match its lineage.json"
    elif damage == "lineage gone":
        (out / "lineage.json").unlink()
        expected = f"{out} has no lineage.json"
    else:
        data = data[: len(data) // 3]
        expected = f"{out}: the model cannot be loaded"
    onnx.write_bytes(bytes(data))
    if damage.endswith("rewritten"):
        with_lineage(out)
    cfg = params.load(work / "params.yaml", "eval")[0]
    with pytest.raises(SystemExit, match=expected):
        run_suite("onnx", str(out), str(prepared), cfg)


def test_a_rewrite_replaces_its_reference_only_when_faithful_finished_and_not_looping():
    from ratchet.models.sdft import choose

    ref = "Return a copy of the string with leading and trailing whitespace removed."
    good = "The `str.strip` method returns a copy of the string with leading and trailing whitespace removed."
    assert choose(ref, good, True, 40)[:2] == (good, "rewrite")
    assert choose(ref, good, False, 40)[:2] == (ref, "unfinished")
    assert choose(ref, "", True, 40)[:2] == (ref, "empty")
    assert choose(ref, "It removes whitespace. " * 6, True, 0)[:2] == (ref, "repetitive")
    stray = "The code is designed to accept a string and return the number of characters in that string."
    reply, why, chrf = choose(ref, stray, True, 40)
    assert (reply, why) == (ref, "strays") and chrf < 40


def faithful_rewrites(model, tok, prompts, max_new_tokens, batch, bf16):
    """Stands in for generation: each prompt's reference, reworded the way the model words an answer."""
    import re

    return [("In short: " + re.search(r"Reference answer: (.*)\n\nRewrite", p, re.S).group(1), True) for p in prompts]


def test_sft_trains_on_the_self_distilled_targets_and_records_them(work, tiny_base, dapt_model, sft_adapter, monkeypatch):
    from ratchet.models import generation
    from ratchet.models.batches import Sampler, cycle_conversations

    run, cfg = params.load(work / "params.yaml", "run", "sft")
    cfg = cfg.model_copy(update={"steps": 4, "self_distill_min_chrf": 40.0})
    monkeypatch.setattr(generation, "greedy", faithful_rewrites)
    trained_on = []
    real_example = sft.chat_example
    monkeypatch.setattr(sft, "chat_example", lambda tok, conv, n: trained_on.append(conv) or real_example(tok, conv, n))
    _, _, _, targets = sft.train(cfg, run, dapt_model, tiny_base, work / "fisher", str(work / "replay"))

    convs = cycle_conversations(work / "replay")
    rows_per_step = cfg.batch_size - sft.replay_rows(cfg.batch_size, cfg.replay_fraction)
    drawn = sorted(set(Sampler(len(convs), run.seed).take(rows_per_step * cfg.steps)))
    assert [t["index"] for t in targets] == drawn and 0 < len(drawn) < len(convs)
    assert all(t["used"] == "rewrite" and t["reply"].startswith("In short: ") for t in targets)
    replies = [c[-1]["content"] for c in trained_on]
    assert all(replies[i].startswith("In short: ") for i in drawn)
    assert all(replies[i] == convs[i][-1]["content"] for i in set(range(len(convs))) - set(drawn))


def test_a_resumed_sft_trains_on_the_targets_it_generated_before(work, tiny_base, dapt_model, sft_adapter, monkeypatch,
                                                                  tmp_path):
    from ratchet.models import generation

    run, cfg = params.load(work / "params.yaml", "run", "sft")
    cfg = cfg.model_copy(update={"steps": 2})
    ckpt = tmp_path / ".sft.ckpt"
    monkeypatch.setattr(generation, "greedy", faithful_rewrites)
    _, _, _, first = sft.train(cfg, run, dapt_model, tiny_base, work / "fisher", str(work / "replay"), ckpt)
    assert (tmp_path / ".sft.ckpt.targets.json").is_file()

    def no_generation(*args):
        raise AssertionError("a resumed run must not generate its targets again")

    monkeypatch.setattr(generation, "greedy", no_generation)
    _, _, _, again = sft.train(cfg, run, dapt_model, tiny_base, work / "fisher", str(work / "replay"), ckpt)
    assert again == first
    from ratchet.models.train import discard_checkpoint
    discard_checkpoint(tmp_path / "sft")
    assert not list(tmp_path.iterdir())
