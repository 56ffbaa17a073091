"""Training speed of dapt, sft and distill: tokens per second and the share of this machine's matmul peak.

    .venv/bin/python -m benchmarks.speed.bench_training                    # SmolLM2, params.yaml's shapes: ~5 min
    .venv/bin/python -m benchmarks.speed.bench_training --steps 4 --tiny   # the tiny test model: the mechanics only

In one process, one after another, each measured the same way:

  peak       torch.matmul on square matrices (1024, 2048) in fp32 and in bf16: the best FLOP/s of a few
             repetitions, the ceiling a training step's matrix products can reach here
  dapt       full-parameter steps on packed blocks of the seed's domain text (batch_size x seq_len of params)
  sft        LoRA steps on the seed's instruction pairs, right-padded per batch as the stage does
  distill    the student (distill.student_layers of the teacher's layers) against a cached top-k teacher

Each stage runs under bf16 autocast (the default, `bf16: true`) and in fp32, with AdamW, gradient
clipping and the stage's own loss; `--steps` timed steps after two warm-up steps. FLOPs per token are
the usual count: 6 N for trained weights (forward, input gradients, weight gradients), 4 N for frozen
ones (no weight gradients: sft's base), plus 12 L d s for attention (L layers, width d, s positions),
N the weights of every matrix product including the output head. The share of peak is achieved FLOP/s
over the matmul peak of the same precision, measured in the same run. For sft, the share of batch
positions that are padding says what packing would save.
"""
from __future__ import annotations

import time

import torch

from benchmarks import common
from benchmarks.common import ROOT
from ratchet.core import params, runtime
from ratchet.core.io import read_jsonl
from ratchet.models import modeling
from ratchet.models.batches import chat_example, collate, pack
from ratchet.models.losses import masked_lm_loss, topk_kd_loss
from ratchet.models.rehearsal import teacher_topk
from ratchet.models.student import student_from


def matmul_peak(dtype: torch.dtype, reps: int = 5) -> float:
    best = 0.0
    for n in (1024, 2048):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        a @ b
        for _ in range(reps):
            t = time.perf_counter()
            a @ b
            best = max(best, 2 * n**3 / (time.perf_counter() - t))
    return best


def matmul_weights(model) -> int:
    """Weights of every matrix product a token goes through: the Linear layers and the (tied) output head."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def time_steps(model, batches, loss_fn, bf16: bool, steps: int) -> tuple[float, int, int]:
    """(seconds of `steps` timed steps after 2 warm-up ones, real tokens, positions)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-5)
    model.train()
    seconds, tokens, positions = 0.0, 0, 0
    for i in range(steps + 2):
        batch = batches[i % len(batches)]
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= 2:
            seconds += time.perf_counter() - t
            tokens += int(batch["attention_mask"].sum())
            positions += batch["input_ids"].numel()
    return seconds, tokens, positions


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--steps", type=int, default=6, help="timed steps per stage and precision")
    ap.add_argument("--tiny", action="store_true", help="the tiny test model instead of SmolLM2")
    args = ap.parse_args()
    runtime.start()
    run, base_cfg, dcfg, scfg, xcfg = params.load(args.params, "run", "base", "dapt", "sft", "distill")
    runtime.seed_everything(run.seed, run.threads)
    import copy

    if args.tiny:
        tok = modeling.load_smollm2_tokenizer()
        source = modeling.tiny_llama(tok, base_cfg.tiny_hidden, base_cfg.tiny_layers, run.seed)
    else:
        tok, source = modeling.load_smollm2()
    fresh = lambda: copy.deepcopy(source)  # noqa: E731
    peak = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(f"matmul peak on {run.threads} threads: fp32 {peak['fp32'] / 1e9:.1f} GFLOP/s, "
          f"bf16 {peak['bf16'] / 1e9:.1f} GFLOP/s", flush=True)

    domain = [r["text"] for r in read_jsonl(ROOT / "data/seed/domain/python_reference.jsonl")]
    chats = [r["messages"] for r in read_jsonl(ROOT / "data/seed/sft/python_stdlib_chat.jsonl")]
    rows = []

    def report(stage, precision, model, batches, loss_fn, frozen_n: int = 0, layers=None):
        cfg = model.config
        n = matmul_weights(model) - frozen_n
        seconds, tokens, positions = time_steps(model, batches, loss_fn, precision == "bf16", args.steps)
        s = batches[0]["input_ids"].shape[1]
        flops_per_pos = 6 * n + 4 * frozen_n + 12 * (layers or cfg.num_hidden_layers) * cfg.hidden_size * s
        achieved = flops_per_pos * positions / seconds
        rows.append((stage, precision, tokens / seconds, achieved / 1e9, achieved / peak[precision],
                     1 - tokens / positions))
        print(f"{stage} {precision}: {tokens / seconds:.0f} tokens/s, {achieved / 1e9:.1f} GFLOP/s, "
              f"{achieved / peak[precision] * 100:.1f}% of the {precision} matmul peak", flush=True)

    for precision in ("bf16", "fp32"):
        # dapt: every weight trains
        model = fresh()
        model.config.use_cache = False
        blocks = pack(tok, domain, dcfg.seq_len)[: dcfg.batch_size * 4]
        batches = [{"input_ids": b, "labels": b, "attention_mask": torch.ones_like(b)}
                   for b in blocks.split(dcfg.batch_size)]
        report("dapt", precision, model, batches,
               lambda m, b: masked_lm_loss(m(input_ids=b["input_ids"]).logits, b["labels"]))

        # sft: LoRA on the frozen model, padded conversations
        from peft import LoraConfig, get_peft_model

        base = fresh()
        base.config.use_cache = False
        frozen = matmul_weights(base)
        model = get_peft_model(base, LoraConfig(r=scfg.lora_r, lora_alpha=scfg.lora_alpha,
                                                lora_dropout=scfg.lora_dropout,
                                                target_modules=list(scfg.target_modules), task_type="CAUSAL_LM"))
        examples = [chat_example(tok, c, scfg.seq_len) for c in chats[: scfg.batch_size * 4]]
        batches = [collate(examples[i:i + scfg.batch_size], tok.pad_token_id)
                   for i in range(0, len(examples), scfg.batch_size)]
        report("sft", precision, model, batches,
               lambda m, b: masked_lm_loss(m(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits,
                                           b["labels"]), frozen_n=frozen)

        # distill: the student against the teacher's cached top-k
        teacher = fresh().eval()
        n_layers = teacher.config.num_hidden_layers
        keep = [i for i in range(n_layers) if i not in range(n_layers // 2 - 1, n_layers // 2 - 1 + n_layers
                                                                    - xcfg.student_layers)]
        student = student_from(teacher, keep)
        student.config.use_cache = False
        blocks = pack(tok, domain, xcfg.seq_len)[: xcfg.batch_size * 4]
        idx, logp = teacher_topk(teacher, blocks, xcfg.teacher_topk, xcfg.temperature, True)
        del teacher
        batches = [{"input_ids": b, "labels": b, "attention_mask": torch.ones_like(b), "t_idx": i.long(), "t_logp": p}
                   for b, i, p in zip(blocks.split(xcfg.batch_size), idx.split(xcfg.batch_size),
                                      logp.split(xcfg.batch_size))]
        report("distill", precision, student, batches,
               lambda m, b: topk_kd_loss(m(input_ids=b["input_ids"]).logits, b["t_idx"], b["t_logp"], b["labels"],
                                         xcfg.temperature, xcfg.kd_weight)[0], layers=len(keep))

    main_table = common.table(["stage", "precision", "tokens/s", "GFLOP/s", "share of the matmul peak", "padding"],
                              [list(r) for r in rows], [None, None, ".0f", ".1f", ".1%", ".0%"])
    print("\n" + common.markdown(main_table))
    print(f"\nmatmul peak (same run, {run.threads} threads): fp32 {peak['fp32'] / 1e9:.1f} GFLOP/s, "
          f"bf16 {peak['bf16'] / 1e9:.1f} GFLOP/s")
    common.record(__file__, {"settings": {"steps": args.steps, "tiny": args.tiny, "threads": run.threads},
                             "matmul_peak_gflop_s": {k: v / 1e9 for k, v in peak.items()},
                             "tables": {"main": main_table}})


if __name__ == "__main__":
    main()
