"""Markdown tables from the benchmarks' results (benchmarks/results/<benchmark>.jsonl, one JSON line per run).

    .venv/bin/python -m benchmarks.tables                             # every benchmark's latest run, its tables
    .venv/bin/python -m benchmarks.tables bench_onnx --table main     # one table of one benchmark's latest run
    .venv/bin/python -m benchmarks.tables bench_startup --series utc commit tables.main.rows.0.3
                                                                      # every run of a benchmark, one row each
    .venv/bin/python -m benchmarks.tables --write BENCHMARKS.md       # regenerate the tables a document marks
    .venv/bin/python -m benchmarks.tables --check BENCHMARKS.md       # exit 1 if a marked table is out of date

A document marks a table with a pair of comments; --write replaces what lies between them:

    <!-- results: bench_onnx main -->
    ...
    <!-- /results -->

`bench_onnx main` is the table `main` of the latest line of benchmarks/results/bench_onnx.jsonl;
`bench_startup series utc commit tables.main.rows.0.3` is one row per line of that file with those fields (dotted
paths into the JSON line, list items by index). Under each table goes the line it came from: when, on what host,
and, for numbers transcribed from an earlier write-up rather than measured by the script, where from.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from benchmarks import common
from benchmarks.common import RESULTS, ROOT

MARK = re.compile(r"(<!-- results: (?P<spec>[^>]*?) -->\n)(?P<body>.*?)(<!-- /results -->)", re.S)


def lines(benchmark: str) -> list[dict]:
    """Every result line of a benchmark, oldest first."""
    path = RESULTS / f"{benchmark}.jsonl"
    if not path.is_file():
        raise SystemExit(f"no results for {benchmark}: {path.relative_to(ROOT)} does not exist")
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def latest(benchmark: str) -> dict:
    return lines(benchmark)[-1]


def field(obj, path: str):
    """The value at a dotted path (`tables.main.rows.0.3`) of a result line; None where there is none."""
    for part in path.split("."):
        if isinstance(obj, list) and part.lstrip("-").isdigit() and -len(obj) <= int(part) < len(obj):
            obj = obj[int(part)]
        elif isinstance(obj, dict) and part in obj:
            obj = obj[part]
        else:
            return None
    return obj


def caption(line: dict) -> str:
    """Where a table comes from: its results file and the run's time, host and, when given, source."""
    host = line.get("host") or {}
    cores = f", {host['cores']} cores" if host.get("cores") else ""
    source = f"; {line['source']}" if line.get("source") else ""
    commit = f", commit {line['commit']}" if line.get("commit") else ""
    return (f"<sub>benchmarks/results/{line['benchmark']}.jsonl: {line.get('utc', '?')}{commit}, "
            f"{host.get('cpu', '?')}{cores}{source}.</sub>")


def render(benchmark: str, table: str | None = None) -> str:
    """The tables of a benchmark's latest run (or the one named), each in Markdown, and the caption."""
    line = latest(benchmark)
    tables = line.get("tables") or {}
    if table is not None and table not in tables:
        raise SystemExit(f"{benchmark}'s latest run has no table {table!r} (it has {sorted(tables)})")
    chosen = [tables[table]] if table is not None else list(tables.values())
    return "\n\n".join(common.markdown(t) for t in chosen) + "\n\n" + caption(line)


def series(benchmark: str, paths: list[str]) -> str:
    """One row per run of a benchmark: the fields at `paths`."""
    rows = [[field(line, p) for p in paths] for line in lines(benchmark)]
    return (common.markdown(common.table(paths, rows))
            + f"\n\n<sub>benchmarks/results/{benchmark}.jsonl, every run.</sub>")


def from_spec(spec: str) -> str:
    words = spec.split()
    if len(words) > 1 and words[1] == "series":
        return series(words[0], words[2:])
    return render(words[0], words[1] if len(words) > 1 else None)


def rewrite(text: str) -> str:
    """`text` with every marked table regenerated from the results."""
    return MARK.sub(lambda m: m.group(1) + from_spec(m.group("spec")) + "\n" + m.group(4), text)


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("benchmark", nargs="*", help="benchmarks by name (default: every results file)")
    ap.add_argument("--table", help="only this table of the latest run")
    ap.add_argument("--series", nargs="+", metavar="FIELD", help="every run, one row each, these fields")
    ap.add_argument("--write", metavar="DOC", help="regenerate the tables marked in DOC, in place")
    ap.add_argument("--check", metavar="DOC", help="exit 1 if a table marked in DOC differs from its results")
    args = ap.parse_args()
    for doc, write in ((args.write, True), (args.check, False)):
        if doc:
            path = Path(doc)
            text = path.read_text(encoding="utf-8")
            new = rewrite(text)
            if write:
                path.write_text(new, encoding="utf-8")
                print(f"{doc}: {len(MARK.findall(text))} tables from benchmarks/results")
            elif new != text:
                sys.exit(f"{doc}: tables differ from benchmarks/results (python -m benchmarks.tables --write {doc})")
    if args.write or args.check:
        return
    names = args.benchmark or sorted(p.stem for p in RESULTS.glob("*.jsonl"))
    for name in names:
        print(f"## {name}\n\n" + (series(name, args.series) if args.series else render(name, args.table)) + "\n")


if __name__ == "__main__":
    main()
