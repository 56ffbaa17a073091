"""What a process pays to import the libraries a stage loads, as transformers comes installed and as
runtime.start leaves it (without scikit-learn, which transformers imports for assisted generation only).

    .venv/bin/python -m benchmarks.speed.bench_startup --rounds 5

Each case is a fresh interpreter that calls runtime.start and imports; the two ways alternate, `--rounds`
times. Prints the median seconds of each way and their ratio.
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import time

from benchmarks import common
from benchmarks.common import ROOT

CASES = {
    "a model class (training stages, base, quantize)": "from transformers import AutoModelForCausalLM",
    "a gate's libraries": "import lm_eval\nfrom lm_eval.models.huggingface import HFLM\nimport presidio_analyzer",
}
WAYS = {
    "as installed": "sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, runtime.AfterImport)]\n",
    "started (no scikit-learn)": "",
}


def seconds(imports: str, way: str) -> float:
    code = f"import sys\nfrom ratchet.core import runtime\nruntime.start()\n{way}{imports}\n"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
    return time.perf_counter() - started


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    times = {(c, w): [] for c in CASES for w in WAYS}
    for _ in range(args.rounds):
        for case, imports in CASES.items():
            for way, code in WAYS.items():
                times[case, way].append(seconds(imports, code))
    a, b = WAYS
    print(f"Seconds to start and import, median of {args.rounds} alternating rounds")
    rows = []
    for case in CASES:
        x, y = statistics.median(times[case, a]), statistics.median(times[case, b])
        rows.append([case, x, y, y / x])
    main_table = common.table(["imports", a, b, "ratio"], rows, [None, ".2f", ".2f", ".2f"])
    print(common.markdown(main_table))
    common.record(__file__, {"settings": {"rounds": args.rounds},
                             "seconds": {f"{c}, {w}": v for (c, w), v in times.items()},
                             "tables": {"main": main_table}})


if __name__ == "__main__":
    main()
