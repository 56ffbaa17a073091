"""Benchmarks, run as modules from the repository root: timing probes under benchmarks.speed, runs that
measure a model's quality or behaviour under benchmarks.experiments (BENCHMARKS.md has both kinds' results).

    .venv/bin/python -m benchmarks.speed.bench_onnx --help
    .venv/bin/python -m benchmarks.experiments.bench_forgetting --help
    .venv/bin/python -m benchmarks.tables --write BENCHMARKS.md

What they share is in benchmarks.common; every run ends with one JSON line, also appended to
benchmarks/results/<benchmark>.jsonl.
"""
