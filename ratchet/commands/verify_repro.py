"""`ratchet verify-repro STAGE`: rerun one stage from its recorded inputs in a scratch copy, compare its outputs.

The stage must be up to date (`dvc status` clean for it), so the workspace holds exactly the inputs and
outputs dvc.lock records. The scratch copy gets the repository's tracked files (code, params.yaml,
dvc.yaml) and the stage's data and model deps (hard links: stages never write their inputs); the stage's own
command runs there, and every output file is compared with the recorded one:

- identical: the same bytes;
- same up to clock readings: JSON whose only differences are wall times and time stamps (keys like
  wall_time_s, time_utc), Markdown whose only differences are time stamps and durations in seconds;
- a gate stage's verdict within tolerance: the same model, documents and settings, the same verdict and the same
  outcome of every rule, each metric within TOLERANCE of the recorded one (the per-document scores, intervals and
  answers behind them move with them; its Markdown, rendered from it, follows it);
- differs: named, with where (JSON key paths; for safetensors the largest weight difference).

Exit 0 when nothing differs beyond clock readings and tolerances, 1 otherwise, 2 when the stage cannot be checked.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ratchet.core import pipeline, vcs
from ratchet.core.io import sha256_file

# readings of a clock in text (a Markdown report): time stamps and durations in seconds
CLOCK_TEXT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ|\b\d+(?:\.\d+)? ?s\b")
# keys whose values are readings of a clock, not results: they differ between any two runs
CLOCK_KEYS = {"wall_time_s", "finished_utc", "time_utc", "started_utc", "seconds", "elapsed_s", "tok_per_s",
              "tokens_per_s"}

# How far a gate's metric may move when the same model is scored again on the same documents with the same
# settings: (relative | absolute, amount). Measured on SmolLM2-135M in bf16, threads 2, AMD EPYC with avx512_bf16:
# on one machine a rerun scores every task bit for bit the same (in one process and in another, after other work,
# at 1 or 2 threads); another CPU makes oneDNN pick other bf16 kernels, which round differently (the same machine
# with ONEDNN_MAX_CPU_ISA=AVX512_CORE): perplexities moved by 7.2e-4 (domain) and 3.4e-4 (general) of themselves,
# near ties flipped 2 of 96 domain and 1 of 100 general multiple-choice picks and 2 of 120 BBQ answers (BBQ bias in
# disambiguated contexts -0.055), 26 of 40 greedy answers changed (chrF -0.95, repetition +0.0096) and canary
# exposure moved up to 0.11 bits. Each tolerance covers that movement, well inside every rule's limit; a rerun
# must still repeat every outcome. The sft verdict of a bf16 host rescored after a kill moved domain perplexity
# by 6.6e-6 (76.31527 -> 76.31577). Exact canary leaks must repeat exactly.
TOLERANCE: dict[str, tuple[str, float]] = {
    "domain_ppl": ("relative", 1e-3), "general_ppl": ("relative", 1e-3),
    "domain_bpb": ("relative", 1e-3), "general_bpb": ("relative", 1e-3),
    "domain_mc_acc": ("absolute", 0.03), "general_mc_acc": ("absolute", 0.02),
    "bbq_accuracy": ("absolute", 0.02), "bbq_accuracy_ambig": ("absolute", 0.03),
    "bbq_accuracy_disambig": ("absolute", 0.03), "bbq_bias_ambig": ("absolute", 0.03),
    "bbq_bias_disambig": ("absolute", 0.06), "stereotype_pref": ("absolute", 0.01),
    "bbq_gap_disambig": ("absolute", 0.04),  # 2 flipped answers among either half's 60 disambiguated items
    "stereotype_bias": ("absolute", 0.01), "answer_chrf": ("absolute", 1.0), "answer_repetition": ("absolute", 0.02),
    "canary_leaks": ("absolute", 0.0), "canary_exposure": ("absolute", 0.2),
    "control_canary_exposure": ("absolute", 0.2),
    "knowledge_mc_acc": ("absolute", 0.03), "knowledge_answer_acc": ("absolute", 0.03),  # as domain_mc_acc: picks
}                                                                   # and greedy answers bf16 kernels may flip
# What a gate's rerun must repeat exactly: what it scored, on which documents, how; and every outcome.
SCORED_KEYS = ("model", "path", "artifact_sha256", "adapter_of", "eval_sha256", "task_sha256", "eval_params",
               "eval_docs", "real", "not_scored", "reused_from")


def files_of(path: Path) -> dict[str, Path]:
    if path.is_file():
        return {"": path}
    return {p.relative_to(path).as_posix(): p for p in sorted(path.rglob("*")) if p.is_file()}


def json_diff(a, b, where: str = "") -> list[str]:
    """Key paths where two JSON values differ, clock readings left out."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if k in CLOCK_KEYS or str(k).endswith(("_seconds", "_utc")):
                continue
            out += json_diff(a.get(k), b.get(k), f"{where}.{k}" if where else str(k))
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in json_diff(x, y, f"{where}[{i}]")]
    return [] if a == b else [where or "(the whole value)"]


def read_json_lines(path: Path):
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def weight_gap(a: Path, b: Path) -> str:
    """The largest absolute difference between two safetensors files' tensors, and how many tensors differ."""
    import torch
    from safetensors.torch import load_file

    x, y = load_file(a), load_file(b)
    if set(x) != set(y):
        return f"different tensors ({len(set(x) ^ set(y))} names differ)"
    gaps = {k: (x[k].float() - y[k].float()).abs().max().item() for k in x if not torch.equal(x[k], y[k])}
    if not gaps:
        return "same tensors, different file bytes"
    worst = max(gaps, key=gaps.get)
    return f"{len(gaps)} of {len(x)} tensors differ, the largest by {gaps[worst]:.3g} ({worst})"


def within(name: str, a, b) -> str | None:
    """None when `b`, a rerun's value of metric `name`, is within TOLERANCE of the recorded `a`; else why not."""
    if a == b:
        return None
    kind, amount = TOLERANCE.get(name, ("equal", 0.0))
    if kind == "equal" or not all(isinstance(x, (int, float)) for x in (a, b)):
        return f"{name} {a!r} -> {b!r} (no tolerance for it in verify_repro.TOLERANCE: must be equal)"
    gap = abs(b - a) / abs(a) if kind == "relative" and a else abs(b - a)
    if gap <= amount:
        return None
    return f"{name} {a:.7g} -> {b:.7g}, by {gap:.2g} ({kind}): beyond its tolerance {amount:g}"


def moved(name: str, a, b) -> str:
    return f"{name} {a:.7g} -> {b:.7g}" if all(isinstance(x, (int, float)) for x in (a, b)) else name


def findings(v: dict) -> list[tuple]:
    return [(f.get("rule"), f.get("ref"), f.get("source"), f.get("outcome", f.get("passed")))
            for f in v.get("findings", [])]


def verdict_gaps(a: dict, b: dict) -> tuple[list[str], list[str]]:
    """(what keeps `b` from reproducing the recorded gate verdict `a`, the metrics that moved within tolerance)."""
    wrong = [k for k in SCORED_KEYS if a.get(k) != b.get(k)]
    if a.get("verdict") != b.get("verdict"):
        wrong.append(f"verdict {a.get('verdict')} -> {b.get('verdict')}")
    fa, fb = findings(a), findings(b)
    if [f[:3] for f in fa] != [f[:3] for f in fb]:
        wrong.append("findings (other rules, references or sources)")
    else:
        wrong += [f"rule {x[0]}" + (f" [{x[2]}]" if x[2] else "") + f": {x[3]} -> {y[3]}"
                  for x, y in zip(fa, fb) if x[3] != y[3]]
    ok = []
    pairs = [(m, a.get("metrics", {}).get(m), b.get("metrics", {}).get(m))
             for m in sorted(set(a.get("metrics", {})) | set(b.get("metrics", {})))]
    for m in sorted(set(a.get("by_source", {})) | set(b.get("by_source", {}))):
        sa, sb = a.get("by_source", {}).get(m, {}), b.get("by_source", {}).get(m, {})
        pairs += [(m, sa.get(src), sb.get(src), src) for src in sorted(set(sa) | set(sb))]
    for name, x, y, *src in pairs:
        shown = f"{name}[{src[0]}]" if src else name
        problem = within(name, x, y)
        if problem:
            wrong.append(problem.replace(name, shown, 1))
        elif x != y:
            ok.append(moved(shown, x, y))
    return wrong, ok


def metrics_gaps(a: dict, b: dict) -> tuple[list[str], list[str]]:
    """The same for a gate's metrics file ({metric: value, "<metric>_by_source": {source: value}, "passed": 0|1})."""
    wrong, ok = [], []
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k), b.get(k)
        name = k.removesuffix("_by_source")
        items = [(f"{name}[{s}]", x.get(s), y.get(s)) for s in sorted(set(x) | set(y))] \
            if isinstance(x, dict) and isinstance(y, dict) else [(k, x, y)]
        for shown, u, v in items:
            problem = within(name, u, v)
            if problem:
                wrong.append(problem.replace(name, shown, 1))
            elif u != v:
                ok.append(moved(shown, u, v))
    return wrong, ok


def compare_scored(recorded: Path, rerun: Path) -> tuple[str, str] | None:
    """A gate's verdict or metrics file (JSON), or its Markdown (rendered from the verdict beside it): (tolerance
    | differs, detail) when it differs beyond clock readings; None for any other file."""
    if rerun.suffix == ".md":
        jsons = recorded.with_suffix(".json"), rerun.with_suffix(".json")
        if not all(p.is_file() for p in jsons):
            return None
        from ratchet.reporting.verdict import render

        verdicts = [json.loads(p.read_text(encoding="utf-8")) for p in jsons]
        if any(md.read_text(encoding="utf-8") != render(v) for md, v in zip((recorded, rerun), verdicts)):
            return None  # not (only) a rendering of its verdict: compared as text
        how, detail = compare(*jsons, scored=True)
        return how, f"rendered from {rerun.with_suffix('.json').name}" + (f" ({how})" if how != "tolerance" else "")
    if rerun.suffix != ".json":
        return None
    try:
        a, b = (json.loads(p.read_text(encoding="utf-8")) for p in (recorded, rerun))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return None
    wrong, ok = verdict_gaps(a, b) if "verdict" in a and "metrics" in a else metrics_gaps(a, b)
    if wrong:
        return "differs", "; ".join(wrong[:6]) + (f" and {len(wrong) - 6} more" if len(wrong) > 6 else "")
    if not ok:
        return "tolerance", "the same outcomes and metrics"
    return "tolerance", ("the same outcomes; within tolerance: " + ", ".join(ok[:6])
                         + (f" and {len(ok) - 6} more" if len(ok) > 6 else ""))


def compare(recorded: Path, rerun: Path, scored: bool = False) -> tuple[str, str]:
    """(identical | clock | tolerance | differs, detail) for one output file; `scored`: a gate stage's, whose
    metrics may move within TOLERANCE."""
    if sha256_file(recorded) == sha256_file(rerun):
        return "identical", ""
    if scored:
        plain = compare(recorded, rerun)
        if plain[0] != "differs":
            return plain
        return compare_scored(recorded, rerun) or plain
    if rerun.suffix in (".json", ".jsonl"):
        try:
            diff = json_diff(read_json_lines(recorded), read_json_lines(rerun))
        except (json.JSONDecodeError, UnicodeDecodeError):
            diff = ["(not JSON)"]
        if not diff:
            return "clock", ""
        return "differs", ", ".join(diff[:6]) + (f" and {len(diff) - 6} more" if len(diff) > 6 else "")
    if rerun.suffix in (".md", ".txt"):
        a, b = (CLOCK_TEXT.sub("<clock>", p.read_text(encoding="utf-8")) for p in (recorded, rerun))
        if a == b:
            return "clock", ""
        line = next(i for i, (x, y) in enumerate(zip(a.splitlines() + [""], b.splitlines() + [""])) if x != y)
        return "differs", f"from line {line + 1}"
    if rerun.suffix == ".safetensors":
        return "differs", weight_gap(recorded, rerun)
    return "differs", f"{recorded.stat().st_size} bytes recorded, {rerun.stat().st_size} rerun"


def link_tree(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_file():
        os.link(src, dst)
    else:
        shutil.copytree(src, dst, copy_function=os.link)


def run(root: Path, stage: str, keep: bool = False) -> int:
    lock = pipeline.lock(root)
    if stage not in lock:
        print(f"ratchet verify-repro: no stage {stage!r} in dvc.lock (stages: {', '.join(lock)}); "
              "run `dvc repro` first", file=sys.stderr)
        return 2
    stale = vcs.stale_stages(root)
    if stage in stale:
        print(f"ratchet verify-repro: stage {stage} is out of date with dvc.lock ({stale[stage]}): the workspace "
              f"does not hold what it recorded. `dvc checkout` or `dvc repro {stage}` first.", file=sys.stderr)
        return 2
    entry = lock[stage]
    outs = list(entry.outs)
    log = pipeline.audit_log_path(root).relative_to(root)
    scratch = Path(tempfile.mkdtemp(prefix=f"ratchet-repro-{stage}-")) / "repo"
    try:
        # a worktree at HEAD: the same commit in the lineage it writes; files edited or added since, as they are
        vcs.git(root, "worktree", "add", "-q", "--detach", str(scratch), "HEAD")
        edited = vcs.git(root, "diff", "--name-only", "HEAD").split("\n") + vcs.git(
            root, "ls-files", "-o", "--exclude-standard").split("\n")
        for rel in filter(None, edited):
            if (root / rel).is_file():
                (scratch / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(root / rel, scratch / rel)
        for dep in entry.deps:
            src, dst = root / dep, scratch / dep
            if src.exists() and not dst.exists():
                link_tree(src, dst)
        if (root / log).is_file():  # a gate appends its verdict: to a copy, never to the record
            (scratch / log).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / log, scratch / log)
        env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        print(f"rerunning {stage} in {scratch}: {entry.raw['cmd']}", flush=True)
        started = time.time()
        r = subprocess.run(entry.raw["cmd"], shell=True, cwd=scratch, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            print(f"ratchet verify-repro: {stage} failed in the scratch copy ({r.returncode}):\n"
                  f"{(r.stdout + r.stderr)[-3000:]}", file=sys.stderr)
            return 1
        rows = []
        for out in outs:
            recorded, rerun = files_of(root / out), files_of(scratch / out)
            for name in sorted(set(recorded) | set(rerun)):
                shown = f"{out}/{name}" if name else out
                if name not in rerun:
                    rows.append((shown, "differs", "not written by the rerun"))
                elif name not in recorded:
                    rows.append((shown, "differs", "written only by the rerun"))
                else:
                    rows.append((shown, *compare(recorded[name], rerun[name], scored=stage.startswith("gate_"))))
        counts = {k: sum(r[1] == k for r in rows) for k in ("identical", "clock", "tolerance", "differs")}
        for shown, how, detail in rows:
            print(f"  {how:9s} {shown}" + (f": {detail}" if detail else ""))
        print(f"{stage}: {len(rows)} output files, rerun in {time.time() - started:.0f} s: {counts['identical']} "
              f"identical, {counts['clock']} the same up to clock readings, "
              + (f"{counts['tolerance']} the same outcomes with metrics within tolerance, " if counts["tolerance"]
                 else "") + f"{counts['differs']} differ" + (": reproduced" if not counts["differs"] else ""))
        return 1 if counts["differs"] else 0
    finally:
        if keep:
            print(f"scratch copy kept: {scratch} (`git worktree remove --force {scratch}` when done)")
        else:
            vcs.git(root, "worktree", "remove", "--force", str(scratch), check=False)
            shutil.rmtree(scratch.parent, ignore_errors=True)


HELP = "rerun a stage in a scratch copy and compare its outputs"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("stage", help="a stage of dvc.yaml, up to date with dvc.lock")
    p.add_argument("--keep", action="store_true", help="keep the scratch worktree to inspect it")


def execute(args: argparse.Namespace) -> int:
    return run(vcs.repo_root(Path.cwd()), args.stage, args.keep)
