"""Benchmark prepare's steps on synthetic corpora with planted PII, duplicates and foreign text.

    .venv/bin/python -m benchmarks.speed.bench_data --sizes 5 50 --pii-sample 1000 --full-stage-max-mb 5

For each size (MB of JSONL) a fresh process: generates a corpus of general-role
records (English prose from Faker's word list; 4% exact duplicates, 3% near
duplicates with one word changed, 1% German, 2% with one planted PII entity),
then times each step of prepare on the whole corpus (parse, normalise,
language, exact dedup, near dedup) and the PII scan on every planted record
plus a sample of clean ones (spaCy NER dominates: scanning everything would take
most of an hour at 50 MB on 2 cores). Then it runs the prepare stage as a
subprocess, twice: without the PII scan (the scanner stubbed out, to show memory
and speed of the streaming pipeline at every size) and, up to
--full-stage-max-mb, with it. Peak memory is the maximum resident set size of
each process (getrusage). Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import common
from benchmarks.common import ROOT, timed_call

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
PII_TYPES = ("EMAIL_ADDRESS", "PHONE_NUMBER", "IP_ADDRESS", "US_SSN", "CREDIT_CARD", "PERSON")
TEMPLATES = {
    "EMAIL_ADDRESS": ("Please write to {} about the details.", lambda f: f.email()),
    "PHONE_NUMBER": ("You can call me at {} after noon.", lambda f: f.phone_number()),
    "IP_ADDRESS": ("The request came from {} last night.", lambda f: f.ipv4_public()),
    "US_SSN": ("My social security number is {} as requested.", lambda f: f.ssn()),
    "CREDIT_CARD": ("The credit card number is {} for the order.", lambda f: f.credit_card_number()),
    "PERSON": ("The letter was signed by {} yesterday.", lambda f: f.name()),
}


# (label, PII scanner stubbed out, near-dup removal off)
STAGES = (("prepare stage, PII stubbed out", True, False),
          ("prepare stage, PII stubbed out, near-dup off", True, True),
          ("prepare stage, full", False, False))


def sentence(rng: random.Random, words: list[str]) -> str:
    s = " ".join(rng.choice(words) for _ in range(rng.randint(8, 20)))
    return s[0].upper() + s[1:] + "."


def generate(path: Path, size_mb: float, seed: int = 0) -> dict:
    """Write the corpus; return the planted PII (line -> (type, value)) and the mix."""
    from faker import Faker
    from faker.providers.lorem.de_DE import Provider as De
    from faker.providers.lorem.en_US import Provider as En

    rng, fake = random.Random(seed), Faker("en_US")
    fake.seed_instance(seed)
    en, de = list(En.word_list), list(De.word_list)
    planted, mix, texts, size = {}, {"clean": 0, "exact_dup": 0, "near_dup": 0, "german": 0, "pii": 0}, [], 0
    with open(path, "w", encoding="utf-8") as f:
        line = 0
        while size < size_mb * 1e6:
            line += 1
            r = rng.random()
            if r < 0.04 and texts:
                kind, text = "exact_dup", rng.choice(texts)
            elif r < 0.07 and texts:
                words = rng.choice(texts).split(" ")
                words[rng.randrange(len(words))] = rng.choice(en)
                kind, text = "near_dup", " ".join(words)
            elif r < 0.08:
                kind, text = "german", " ".join(sentence(rng, de) for _ in range(rng.randint(3, 6)))
            else:
                sents = [sentence(rng, en) for _ in range(rng.randint(3, 6))]
                kind = "clean"
                if r < 0.10:
                    kind = "pii"
                    entity = PII_TYPES[line % len(PII_TYPES)]
                    template, make = TEMPLATES[entity]
                    value = make(fake)
                    planted[line] = (entity, value)
                    sents.insert(rng.randrange(len(sents) + 1), template.format(value))
                text = " ".join(sents)
                if len(texts) < 2000:
                    texts.append(text)
                elif rng.random() < 0.05:
                    texts[rng.randrange(len(texts))] = text
            mix[kind] += 1
            row = json.dumps({"text": text}) + "\n"
            f.write(row)
            size += len(row.encode())
    return {"planted": planted, "mix": mix, "records": line, "bytes": size}


def worker(tmp: Path, size_mb: float, pii_sample: int) -> dict:
    """Generate the corpus under tmp and time each step in this process."""
    from ratchet.core import params
    from ratchet.core.io import sha256_text
    from ratchet.data.dedup import NearDuplicates
    from ratchet.data.language import LanguageFilter
    from ratchet.data.pii import Scanner
    from ratchet.data.records import map_text, normalise, read_records

    cfg, pii_cfg = params.load(ROOT / "params.yaml", "prepare", "pii")
    corpus = tmp / "seed" / "general" / "corpus.jsonl"
    corpus.parent.mkdir(parents=True)
    (tmp / "drops").mkdir()
    gen, gen_s = timed_call(lambda: generate(corpus, size_mb))
    mb, n = gen["bytes"] / 1e6, gen["records"]
    rows = {}

    recs, t = timed_call(lambda: [item.record for item in read_records(corpus, "general")])
    rows["parse (read + JSON)"] = (t, mb, n)
    norm, t = timed_call(lambda: [map_text(r, normalise) for r in recs])
    rows["normalise"] = (t, mb, n)
    texts = [r["text"] for r in norm]
    del recs, norm
    lang = LanguageFilter(cfg.languages, cfg.language_min_confidence)
    out, t = timed_call(lambda: [lang.check(x) for x in texts])
    rows["language (py3langid)"] = (t, mb, n)
    foreign = sum(o is not None for o in out)
    seen = {}

    def exact():
        keep = []
        for i, x in enumerate(texts):
            d = sha256_text(x)
            if d not in seen:
                seen[d] = i
                keep.append(x)
        return keep

    unique, t = timed_call(exact)
    rows["exact dedup (sha256)"] = (t, mb, n)
    near = NearDuplicates(cfg.near_dup_threshold, cfg.near_dup_num_perm, cfg.near_dup_shingle_words)
    nd, t = timed_call(lambda: sum(near.check_add(str(i), x) is not None for i, x in enumerate(unique)))
    u_mb = sum(len(x) for x in unique) / 1e6
    rows["near dedup (MinHash LSH)"] = (t, u_mb, len(unique))

    # PII: every planted record plus a sample of the others
    scanner, load_s = timed_call(lambda: Scanner(pii_cfg))
    lines = sorted(gen["planted"])
    rng = random.Random(1)
    clean = rng.sample([i for i in range(1, n + 1) if i not in gen["planted"]], min(pii_sample, n))
    sample = [texts[i - 1] for i in lines + clean]
    found, t = timed_call(lambda: scanner.scan(sample))
    rows["PII (presidio + spaCy), on a sample"] = (t, sum(map(len, sample)) / 1e6, len(sample))
    # the same records one analyze() call each, without spaCy's nlp.pipe batching
    few = sample[:300]
    engine = scanner.batch.analyzer_engine
    _, t = timed_call(lambda: [engine.analyze(x, language="en", entities=scanner.entities,
                                              score_threshold=scanner.floor) for x in few])
    rows["PII, one analyze() per record (no batching)"] = (t, sum(map(len, few)) / 1e6, len(few))
    _, t = timed_call(lambda: scanner.scan(few))
    rows["PII, same records batched (nlp.pipe)"] = (t, sum(map(len, few)) / 1e6, len(few))
    recall = {e: [0, 0] for e in PII_TYPES}
    for line, hits in zip(lines, found):
        entity, value = gen["planted"][line]
        text = texts[line - 1]
        start = text.index(value)
        recall[entity][1] += 1
        recall[entity][0] += any(h.entity == entity and h.start < start + len(value) and h.end > start for h in hits)
    fp = {}
    for hits in found[len(lines):]:
        for h in hits:
            fp[h.entity] = fp.get(h.entity, 0) + 1
    peak_steps = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    del texts, unique, near, seen

    return {"size_mb": round(mb, 1), "records": n, "mix": gen["mix"], "generate_s": round(gen_s, 1),
            "steps": {k: {"seconds": round(t, 2), "mb_per_s": round(m / t, 2), "rec_per_s": round(c / t)}
                      for k, (t, m, c) in rows.items()},
            "scanner_load_s": round(load_s, 1), "foreign_found": foreign, "near_dups_found": nd,
            "pii_recall": {e: f"{a}/{b}" for e, (a, b) in recall.items()}, "pii_hits_on_clean_sample": fp,
            "peak_rss_steps_mb": round(peak_steps)}


def run_stage(tmp: Path, stub_pii: bool, params_file: Path = ROOT / "params.yaml") -> dict:
    """The prepare stage as a child of this small process, so its peak RSS is its own (ru_maxrss survives fork)."""
    code = ("import sys\nfrom ratchet.data import prepare\n"
            + ("class S:\n  def __init__(self, cfg): pass\n  def scan(self, t): return [[] for _ in t]\n"
               "prepare.Scanner = S\n" if stub_pii else "")
            + "import runpy\nsys.argv = ['stages', 'prepare', *sys.argv[1:]]\n"
            "runpy.run_module('stages', run_name='__main__')")
    proc = subprocess.Popen([sys.executable, "-c", code, "--params", str(params_file),
                             "--seed", str(tmp / "seed"), "--drops", str(tmp / "drops"),
                             "--out", str(tmp / "prepared"), "--pii-report", str(tmp / "pii.json")],
                            cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    started = time.perf_counter()
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"prepare stage failed:\n{output}")
    acc = json.loads((tmp / "prepared/manifest.json").read_text())["roles"]["general"]
    return {"seconds": round(wall, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024), "accounting": acc}


def tables(results: list[dict]) -> dict:
    """The steps' throughput and the stage's runs per size, and the PII recall per planted entity."""
    sizes = [f"{r['size_mb']} MB ({r['records']} records)" for r in results]
    rows = []
    for step in results[0]["steps"]:
        rows.append([step, *(f"{r['steps'][step]['mb_per_s']} MB/s, {r['steps'][step]['rec_per_s']} rec/s"
                             if step in r["steps"] else "-" for r in results)])
    for label, _, _ in STAGES:
        rows.append([label, *(f"{s['mb_per_s']} MB/s, {s['rec_per_s']} rec/s, {s['seconds']} s, "
                              f"peak RSS {s['peak_rss_mb']} MB" if (s := r["stages"].get(label)) else "not run"
                              for r in results)])
    rows.append(["peak RSS of the step-by-step process", *(f"{r['peak_rss_steps_mb']} MB" for r in results)])
    align = "l" + "r" * len(results)
    recall = [[e, *(r["pii_recall"][e] for r in results)] for e in PII_TYPES]
    return {"steps": common.table(["step", *sizes], rows, align=align),
            "pii_recall": common.table(["PII recall on planted entities", *sizes], recall, align=align)}


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--sizes", type=float, nargs="+", default=[5, 50], help="corpus sizes in MB")
    ap.add_argument("--pii-sample", type=int, default=1000, help="clean records scanned for PII besides the planted")
    ap.add_argument("--full-stage-max-mb", type=float, default=5, help="largest size to run the stage with PII on")
    ap.add_argument("--json", help="also write the raw results here")
    ap.add_argument("--worker", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--tmp", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(Path(args.tmp), args.worker, args.pii_sample)))
        return
    results = []
    for size in args.sizes:  # one process per size, so peak memory is per size
        tmp = Path(tempfile.mkdtemp(prefix="bench_data_"))
        out = subprocess.run([sys.executable, "-m", "benchmarks.speed.bench_data", "--worker", str(size),
                              "--tmp", str(tmp), "--pii-sample", str(args.pii_sample)], cwd=ROOT, env=ENV,
                             capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(out.stderr[-3000:])
        r = json.loads(out.stdout.strip().splitlines()[-1])
        r["stages"] = {}
        no_near = tmp / "params_no_near_dup.yaml"  # shows what memory the near-dup index takes
        no_near.write_text((ROOT / "params.yaml").read_text().replace(
            "  near_dup_threshold: ", "  near_dup_threshold: 1.0  # ", 1))
        for label, stub, near_off in STAGES:
            if stub or size <= args.full_stage_max_mb:
                st = run_stage(tmp, stub, no_near if near_off else ROOT / "params.yaml")
                st.update(mb_per_s=round(r["size_mb"] / st["seconds"], 2),
                          rec_per_s=round(r["records"] / st["seconds"]))
                r["stages"][label] = st
        shutil.rmtree(tmp)
        results.append(r)
        print(json.dumps(r, indent=1), file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    out = tables(results)
    print(common.markdown(out["steps"]) + "\n\n" + common.markdown(out["pii_recall"]))
    common.record(__file__, {"settings": {"sizes_mb": args.sizes, "pii_sample": args.pii_sample,
                                          "full_stage_max_mb": args.full_stage_max_mb},
                             "results": results, "tables": out})


if __name__ == "__main__":
    from ratchet.core import runtime

    runtime.start()
    main()
