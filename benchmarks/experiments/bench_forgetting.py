"""Forgetting over real update cycles: naive, replay, EWC, replay+EWC, self-generated rehearsal, self+EWC.

    .venv/bin/python -m benchmarks.experiments.bench_forgetting --work /tmp/forgetting   # SmolLM2: about 45 min
    .venv/bin/python -m benchmarks.experiments.bench_forgetting --work /tmp/forgetting --resume   # finish a run
    .venv/bin/python -m benchmarks.experiments.bench_forgetting --work /tmp/forgetting-tiny --tiny   # mechanics

In a scratch clone (this checkout is never touched), with the data stages of
dvc.yaml (prepare, validate, replay) building each cycle's new text and replay
buffer exactly as `ratchet update` does:

  cycle 0  the seed: one champion for every method, dapt with params.yaml's settings from the base
  cycle 1  the numpy drop (2026-W48), from the champion, once per method
  cycle 2  the Pallets drop (2026-W49), from each method's cycle-1 model

Each method is dapt's own training (ratchet/models/dapt.py train) with params.yaml's
dapt settings except:

  naive         replay_fraction 0, no EWC
  replay        the replay buffer's general and earlier domain text (params' replay_fraction)
  ewc           replay_fraction 0, EWC
  replay+ewc    both
  self          the champion's own samples with a KL term toward it (replay_source champion)
  self+ewc      both

EWC's lambda is scale-free (losses.ewc_weight: the weight of the predicted loss
rise on the champion's text against the new text's loss); --ewc-lambda sets it,
params' sft.ewc_lambda by default. To see what the diagonal Fisher's prediction
is worth, the benchmark measures, on cycle 1's naive run, the rise of the
champion's replay text's mean per-token loss next to what the Fisher predicts for
that displacement (the lambda that would make the two equal: --ewc-lambda
calibrated), and the prediction's spread across seeds for 8 and 32 samples.

Every model is then scored with the gates' lm-eval suite on the last cycle's
held-out data (the same documents for all, so every comparison is paired, with
a 90% bootstrap interval over documents): domain perplexity per source, general
perplexity on the independent general text (data/eval, no source shared with
the replay buffer) and general multiple choice. The table:

  domain gain      1 - ppl after / ppl before, on each cycle's new source (higher: learned more)
  general          general ppl after cycle 2 / the champion's - 1 (forgetting; lower is better)
  backward         ppl after cycle 2 / ppl just after it was learned - 1, on the seed and on numpy
  train s          dapt's seconds over both cycles (Fisher and rehearsal samples included)

Models and scores are kept under <work> (--resume reuses them), the table in <work>/forgetting.json.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks import common
from ratchet.core import params, runtime
from ratchet.core.io import atomic_dir, read_json, write_json
from ratchet.data import ingest
from ratchet.eval import scores
from ratchet.eval.evaluate import run_suite, task_data
from ratchet.models import dapt, modeling
from ratchet.models.batches import Sampler, pack, replay_texts
from ratchet.models.fisher import fisher_diagonal, target_weights
from ratchet.models.losses import ewc_weight
from tools import make_drops

PY = sys.executable
CYCLES = [("seed", None), ("numpy", "2026-W48"), ("pallets", "2026-W49")]
METHODS = {  # dapt settings over params.yaml's; "ewc": True takes the measured lambda
    "naive": {"replay_fraction": 0.0},
    "replay": {"replay_source": "buffer"},
    "ewc": {"replay_fraction": 0.0, "ewc": True},
    "replay+ewc": {"replay_source": "buffer", "ewc": True},
    "self": {"replay_source": "champion"},
    "self+ewc": {"replay_source": "champion", "ewc": True},
}
SUITE = ("ratchet_domain_ppl", "ratchet_general_ppl", "ratchet_general_mc")


def data_stages(repo: Path, week: str | None, drops: Path, name: str, cycle_dir: Path) -> Path:
    """Ingest the drop (none for the seed), run dvc's data stages, keep a copy of the cycle's replay folder."""
    if (cycle_dir / "replay").is_dir():
        return cycle_dir / "replay"
    if week:
        for line in ingest.ingest(drops / name, week, None, repo):
            print(f"  {line}", flush=True)
    subprocess.run([PY, "-m", "dvc", "repro", "base", "replay"], cwd=repo, check=True, env=common.tool_env())
    with atomic_dir(cycle_dir / "replay") as tmp:
        shutil.copytree(repo / "data/replay", tmp, dirs_exist_ok=True)
    return cycle_dir / "replay"


def fisher_of(model_dir: Path, replay: Path, run, samples: int, seq_len: int, seed: int, target_modules) -> dict:
    tok, model = modeling.load_tokenizer(model_dir), modeling.load_model(model_dir)
    general = pack(tok, replay_texts(replay), seq_len)
    blocks = general[Sampler(len(general), seed).take(min(samples, len(general)))]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return fisher_diagonal(model, blocks, target_weights(model, target_modules))


def save_fisher(fisher: dict, tokens: int, out: Path) -> Path:
    from safetensors.torch import save_file

    with atomic_dir(out) as tmp:
        save_file({k: v.contiguous() for k, v in fisher.items()}, tmp / "fisher.safetensors",
                  metadata={"tokens_per_sample": str(tokens)})
    return out


def replay_loss(model_dir: Path, replay: Path, seq_len: int, seed: int, n: int = 32) -> float:
    """Mean per-token loss on n blocks of the replay buffer (what the champion knew), fp32."""
    tok, model = modeling.load_tokenizer(model_dir), modeling.load_model(model_dir)
    general = pack(tok, replay_texts(replay), seq_len)
    blocks = general[Sampler(len(general), seed + 7).take(min(n, len(general)))]
    with torch.inference_mode():
        return float(np.mean([model(input_ids=b[None], labels=b[None]).loss.item() for b in blocks]))


def quad(fisher: dict, a: dict, b: dict) -> float:
    return sum((f * (a[k] - b[k]).pow(2)).sum().item() for k, f in fisher.items())


def train_one(out: Path, cfg, run, start: Path, replay: Path, fisher_dir: Path | None) -> dict:
    """dapt from start, saved to out with a done.json of its history and timing; reused when done.json is there."""
    if (out / "done.json").is_file():
        return read_json(out / "done.json")
    t = time.time()
    model, tok, history, record = dapt.train(cfg, run, start, replay, fisher_dir)
    seconds = time.time() - t
    with atomic_dir(out) as tmp:
        modeling.save_model(model, tok, tmp)
        done = {"seconds": round(seconds, 1), "final_loss": history[-1]["loss"], "record": record,
                "config": params.as_dict(cfg)}
        write_json(tmp / "done.json", done)
        common.with_lineage(tmp, "dapt", start=start)
    return done


def score(model_dir: Path, repo: Path, cfg_eval, tasks: dict, cache: Path) -> dict:
    if cache.is_file():
        return read_json(cache)
    out = run_suite("hf", str(model_dir), str(repo / "data/prepared"), cfg_eval, tasks=tasks)["scores"]
    write_json(cache, out)
    return out


def ratio(name: str, cand: dict, ref: dict, source: str | None, seed: int) -> scores.Estimate:
    return scores.worse_by(name, cand, ref, "ratio", source=source, draws=1000, confidence=0.9, seed=seed)


def cell(e, minus_one: bool = True, flip: bool = False) -> str:
    f = (lambda x: 1 - x) if flip else ((lambda x: x - 1) if minus_one else (lambda x: x))
    lo, hi = sorted((f(e.low), f(e.high)))
    return f"{f(e.point) * 100:+.1f}% [{lo * 100:+.1f}, {hi * 100:+.1f}]"


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--work", required=True)
    ap.add_argument("--tiny", action="store_true", help="the tiny test profile: the mechanics in minutes")
    ap.add_argument("--resume", action="store_true", help="keep <work> and reuse what is done")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--ewc-lambda", default="sft",
                    help="sft (params' sft.ewc_lambda), calibrated (measured rise / predicted rise) or a number")
    args = ap.parse_args()
    runtime.start()
    work = Path(args.work).resolve()
    repo, drops = work / "repo", work / "drops"
    if not args.resume or not repo.is_dir():
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        make_drops.main(["--out", str(drops)])
        common.scratch_clone(repo, args.tiny)
    run, base_cfg, fcfg, sft = params.load(repo / "params.yaml", "run", "dapt", "fisher", "sft")
    cfg_eval = params.load(repo / "params.yaml", "eval")[0]
    runtime.seed_everything(run.seed, run.threads)

    replays = [data_stages(repo, week, drops, name, work / f"cycle-{c}") for c, (name, week) in enumerate(CYCLES)]
    base = repo / "models/base"
    champion = work / "models/champion"
    train_one(champion, base_cfg, run, base, replays[0], None)
    print(f"cycle 0 (seed): the champion in {read_json(champion / 'done.json')['seconds']}s", flush=True)

    # The scale-free lambda and the Fisher's spread, on cycle 1's naive run.
    calib_file = work / "ewc_calibration.json"
    naive1 = work / "models/naive/1"
    train_one(naive1, base_cfg.model_copy(update=METHODS["naive"]), run, champion, replays[1], None)
    if calib_file.is_file():
        calib = read_json(calib_file)
    else:
        a = dict(modeling.load_model(naive1).named_parameters())
        b = dict(modeling.load_model(champion).named_parameters())
        a, b = ({k: v.detach() for k, v in d.items()} for d in (a, b))
        spread = {}
        for samples in (fcfg.samples, 32):
            preds = []
            for seed in range(3):
                f = fisher_of(champion, replays[1], run, samples, fcfg.seq_len, run.seed + seed, sft.target_modules)
                preds.append(ewc_weight(1.0, fcfg.seq_len) * quad(f, a, b))
            spread[samples] = {"predicted_rise": preds, "relative_std": float(np.std(preds) / np.mean(preds))}
        rise = replay_loss(naive1, replays[1], fcfg.seq_len, run.seed) - replay_loss(champion, replays[1],
                                                                                      fcfg.seq_len, run.seed)
        predicted = float(np.mean(spread[fcfg.samples]["predicted_rise"]))
        calib = {"measured_rise": rise, "predicted_rise": predicted,
                 "lambda": float(f"{max(rise, 0.0) / predicted:.2g}"), "spread": spread}
        write_json(calib_file, calib)
    named = {"sft": sft.ewc_lambda, "calibrated": calib["lambda"]}
    lam = named[args.ewc_lambda] if args.ewc_lambda in named else float(args.ewc_lambda)
    print(f"EWC: naive training raised the champion's replay-text loss by {calib['measured_rise']:.4f} nats; the "
          f"diagonal Fisher predicts {calib['predicted_rise']:.2e} (calibrated lambda {calib['lambda']}); "
          f"lambda used {lam}", flush=True)

    rows = {}
    for m in args.methods:
        over = dict(METHODS[m])
        use_ewc = over.pop("ewc", False)
        cfg = base_cfg.model_copy(update={**over, "ewc_lambda": lam if use_ewc else 0.0})
        start, seconds = champion, 0.0
        for c in (1, 2):
            fisher_dir = None
            if use_ewc:
                t = time.time()
                fisher_dir = work / f"fisher/{m}/{c}"
                if not (fisher_dir / "fisher.safetensors").is_file():
                    save_fisher(fisher_of(start, replays[c], run, fcfg.samples, fcfg.seq_len, run.seed,
                                          sft.target_modules), fcfg.seq_len, fisher_dir)
                seconds += time.time() - t
            out = work / f"models/{m}/{c}"
            seconds += train_one(out, cfg, run, start, replays[c], fisher_dir)["seconds"]
            start = out
        rows[m] = {"train_s": round(seconds)}
        print(f"{m}: trained both cycles ({rows[m]['train_s']} s)", flush=True)

    # Score every model on the last cycle's held-out data.
    tasks = {k: v for k, v in task_data(str(repo / "data/prepared"), str(repo / "data/eval"), cfg_eval).items()
             if k in SUITE}
    sc = lambda d, tag: score(d, repo, cfg_eval, tasks, work / f"scores/{tag}.json")  # noqa: E731
    champ = sc(champion, "champion")
    base_scores = sc(base, "base")
    seed_name, (w1, w2) = "seed", (CYCLES[1][1], CYCLES[2][1])
    table = {}
    for m in args.methods:
        s1, s2 = sc(work / f"models/{m}/1", f"{m}-1"), sc(work / f"models/{m}/2", f"{m}-2")
        gain1 = ratio("domain_ppl", s1, champ, w1, run.seed)
        gain2 = ratio("domain_ppl", s2, s1, w2, run.seed)
        general = ratio("general_ppl", s2, champ, None, run.seed)
        back_seed = ratio("domain_ppl", s2, champ, seed_name, run.seed)
        back_numpy = ratio("domain_ppl", s2, s1, w1, run.seed)
        mc = scores.value("general_mc_acc", s2)
        table[m] = {"gain_numpy": gain1.__dict__, "gain_pallets": gain2.__dict__, "general": general.__dict__,
                    "back_seed": back_seed.__dict__, "back_numpy": back_numpy.__dict__, "general_mc": mc,
                    **rows.get(m, {})}
        print(f"| {m} | {cell(gain1, flip=True)} | {cell(gain2, flip=True)} | {cell(general)} | {cell(back_seed)} | "
              f"{cell(back_numpy)} | {mc:.3f} | {rows.get(m, {}).get('train_s', '-')} |", flush=True)
    ref = {"champion": {k: scores.value(k, champ) for k in ("general_ppl", "general_mc_acc")},
           "base": {k: scores.value(k, base_scores) for k in ("general_ppl", "general_mc_acc")}}
    write_json(work / "forgetting.json", {"table": table, "ewc": {**calib, "lambda_used": lam}, "reference": ref})

    main_table = common.table(
        ["method", "domain gain numpy", "domain gain Pallets", "general ppl vs champion", "backward: seed",
         "backward: numpy", "general MC", "train s"], [], [None, None, None, None, None, None, ".3f", None],
        align="llllllrr")
    for m, r in table.items():
        e = {k: scores.Estimate(**r[k]) for k in ("gain_numpy", "gain_pallets", "general", "back_seed", "back_numpy")}
        main_table["rows"].append([m, cell(e["gain_numpy"], flip=True), cell(e["gain_pallets"], flip=True),
                                   cell(e["general"]), cell(e["back_seed"]), cell(e["back_numpy"]), r["general_mc"],
                                   r.get("train_s")])
    print("\n" + common.markdown(main_table))
    out = {"main": main_table}
    if "naive" in table:
        nv = table["naive"]
        forget = lambda r: max(r["general"]["point"] - 1, 0) + max(r["back_seed"]["point"] - 1, 0) + max(  # noqa: E731
            r["back_numpy"]["point"] - 1, 0)
        gain = lambda r: (1 - r["gain_numpy"]["point"]) + (1 - r["gain_pallets"]["point"])  # noqa: E731
        print("\nagainst naive (forgetting = the sum of the three rises above; gain = the sum of both cycles' gains):")
        against = common.table(["method", "forgetting cut", "domain gain kept"], [], [None, ".0%", ".1%"], "lrr")
        for m, r in table.items():
            cut = 1 - forget(r) / forget(nv) if forget(nv) > 0 else float("nan")
            print(f"  {m:11s} forgetting cut {cut * 100:6.1f}%   domain gain kept {gain(r) / gain(nv) * 100:6.1f}%")
            against["rows"].append([m, cut, gain(r) / gain(nv)])
        out["against_naive"] = against
    print(f"\nreferences: champion general ppl {ref['champion']['general_ppl']:.1f}, "
          f"MC {ref['champion']['general_mc_acc']:.3f}; "
          f"base {ref['base']['general_ppl']:.1f}, MC {ref['base']['general_mc_acc']:.3f}")
    print(f"EWC lambda {lam}; the Fisher's spread across 3 seeds (predicted rise at naive's cycle-1 displacement): "
          + ", ".join(f"{n} samples {v['relative_std'] * 100:.1f}%" for n, v in calib["spread"].items()))
    common.record(__file__, {"settings": {"tiny": args.tiny, "methods": args.methods, "ewc_lambda": lam,
                                          "work": str(work)},
                             "methods": table, "ewc": calib, "reference": ref, "tables": out})


if __name__ == "__main__":
    main()
