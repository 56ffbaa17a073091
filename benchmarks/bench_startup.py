"""What a process pays to import the libraries a stage loads, as transformers comes installed and as
runtime.start leaves it (without scikit-learn, which transformers imports for assisted generation only).

    python benchmarks/bench_startup.py --rounds 5

Each case is a fresh interpreter that calls runtime.start and imports; the two ways alternate, `--rounds`
times. Prints the median seconds of each way and their ratio.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASES = {
    "a model class (training stages, base, quantize)": "from transformers import AutoModelForCausalLM",
    "a gate's libraries": "import lm_eval\nfrom lm_eval.models.huggingface import HFLM\nimport presidio_analyzer",
}
WAYS = {
    "as installed": "sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, runtime.AfterImport)]\n",
    "started (no scikit-learn)": "",
}


def seconds(imports: str, way: str) -> float:
    code = f"import sys\nfrom stages.core import runtime\nruntime.start()\n{way}{imports}\n"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    times = {(c, w): [] for c in CASES for w in WAYS}
    for _ in range(args.rounds):
        for case, imports in CASES.items():
            for way, code in WAYS.items():
                times[case, way].append(seconds(imports, code))
    a, b = WAYS
    print(f"Seconds to start and import, median of {args.rounds} alternating rounds")
    print(f"| imports | {a} | {b} | ratio |\n|---|---:|---:|---:|")
    for case in CASES:
        x, y = statistics.median(times[case, a]), statistics.median(times[case, b])
        print(f"| {case} | {x:.2f} | {y:.2f} | {y / x:.2f} |")


if __name__ == "__main__":
    main()
