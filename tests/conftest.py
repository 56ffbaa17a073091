"""Shared fixtures: the tiny profile, a tiny base model, and repository copies."""
from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ratchet.core import pipeline, runtime

runtime.start()  # the test session is a process start: offline and quiet before any library loads

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "tiny_params.yaml"


# Test modules by their time in CI (the --durations table), longest first. Each module's tests run in order on
# one worker (--dist loadscope, not reordered); a long module dispatched last would keep one worker busy long after
# the other ran out of work.
LONGEST_FIRST = ("test_update.py", "test_pipeline.py", "test_faults.py", "test_training.py", "test_gates.py",
                 "test_shared_context.py", "test_ingest.py")


# The integration tier: what trains a model, runs lm-eval or runs `dvc repro`. Marked here from what a test asks
# for (a trained fixture, a module of whole-pipeline runs); tests that score with lm-eval on an untrained model, or
# prepare the whole seed, carry @pytest.mark.integration themselves. `pytest -m "not integration"` is the fast tier.
TRAINED = {"dapt_model", "sft_adapter", "student"}
WHOLE_RUNS = {"test_pipeline.py", "test_update.py", "test_faults.py", "test_remote.py"}


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if (TRAINED & set(item.fixturenames) or item.path.name in WHOLE_RUNS) and not item.get_closest_marker(
                "integration"):
            item.add_marker(pytest.mark.integration)
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each module keeps its order


def assert_same_scores(scores: dict, other: dict, tasks=None) -> None:
    """Two runs' per-document scores agree within what float32 kernels of another shape can move them: a
    log-likelihood to 1e-4 relative, an exposure or a stereotype pair's margin (a difference of log-likelihoods)
    to 1e-3; picks, ranks, answers and counts exactly. (oneDNN picks other kernels by batch shape, and the last
    digit of a rounded margin moves with them on some hosts.)"""
    for task in tasks or scores:
        assert [r["id"] for r in scores[task]] == [r["id"] for r in other[task]], task
        for a, b in zip(scores[task], other[task]):
            assert a.keys() == b.keys(), (task, a["id"])
            for key, va in a.items():
                vb = b[key]
                if key == "ll":
                    assert va == pytest.approx(vb, rel=1e-4), (task, a["id"], key)
                elif key in ("exposure", "margin"):
                    assert va == pytest.approx(vb, abs=1e-3), (task, a["id"], key)
                else:
                    assert va == vb, (task, a["id"], key)


def tiny_params() -> dict:
    """params.yaml with the tiny profile's sections merged in."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in yaml.safe_load(TINY.read_text()).items():
        if isinstance(values, dict) and section != "gates":
            params[section] = {**params.get(section, {}), **values}
        else:
            params[section] = values
    return params


def write_params(path: Path, params: dict) -> Path:
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def env() -> dict:
    """The environment a stage sees: this interpreter's bin first on PATH, so `python` is ours."""
    e = dict(os.environ)
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '')}"
    return e


def run(cmd: list[str] | str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, shell=isinstance(cmd, str))
    if check and r.returncode != 0:
        raise AssertionError(f"{cmd} failed ({r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}")
    return r


def stage_argv(stage: str, root: Path, params: Path, at: dict[str, Path] | None = None) -> list[str]:
    """dvc.yaml's command of `stage`, as its recipe's argv: every path it names moved under `root` (a test's
    scratch repository), or to `at[path]` where a test keeps that input elsewhere (a path inside a folder of `at`
    follows the folder), and `--params` pointed at `params` where the stage declares params. Read from dvc.yaml through the pipeline's one wiring
    reader, so a test runs a stage with exactly the flags `dvc repro` gives it."""
    at = {k.rstrip("/"): Path(v) for k, v in (at or {}).items()}

    def moved(value: str) -> str:
        if "/" not in value and "." not in value:
            return value  # not a path: a model name (--model dapt)
        for folder in sorted(at, key=len, reverse=True):
            if value == folder or value.startswith(folder + "/"):
                return str(at[folder] / value[len(folder) + 1:]) if value != folder else str(at[folder])
        return str(root / value)

    wired, argv, flag = pipeline.stages(ROOT)[stage], [], None
    for token in wired.argv[len(pipeline.LAUNCHER) + 1:]:  # token by token: a flag may be given twice
        if token.startswith("--"):
            flag = token
            argv.append(token)
            continue
        name, eq, path = token.rpartition("=") if flag == "--ref" else ("", "", token)
        argv.append(f"{name}{eq}{moved(path)}")
    return [*argv, "--params", str(params)] if wired.params else argv


def stage_cmd(stage: str, root: Path, params: Path, at: dict[str, Path] | None = None) -> list[str]:
    """dvc.yaml's command of `stage` as a process's argv, through the launcher as `dvc repro` runs it, laid out as
    stage_argv says."""
    return [sys.executable, *pipeline.LAUNCHER[1:], pipeline.stages(ROOT)[stage].recipe,
            *stage_argv(stage, root, params, at)]


def run_stage(stage: str, root: Path, params: Path, at: dict[str, Path] | None = None) -> None:
    """Run dvc.yaml's `stage` in this process (its recipe's main), laid out as stage_argv says."""
    importlib.import_module(f"stages.{pipeline.stages(ROOT)[stage].recipe}").main(stage_argv(stage, root, params, at))


def sample_seed(src: Path, dst: Path, records: int) -> None:
    """The first `records` lines of every seed file: the PII scan of the whole seed takes a minute."""
    for f in sorted(src.glob("*/*.jsonl")):
        out = dst / f.parent.name / f.name
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(f.read_text(encoding="utf-8").splitlines(keepends=True)[:records]), encoding="utf-8")


# What a test drop declares about itself (ratchet/data/sources.py); ingest refuses a drop without it.
DROP_SOURCE = {"what": "synthetic records written by a test", "origin": "generated in the test (tests/)",
               "license": "CC0-1.0", "personal_data": "none (made-up text)"}


def write_drop_source(folder: Path, **fields) -> Path:
    """The SOURCE.yaml of a drop folder: DROP_SOURCE with `fields` over it (a field given as None is left out)."""
    path = folder / "SOURCE.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({k: v for k, v in {**DROP_SOURCE, **fields}.items() if v is not None},
                                   sort_keys=False))
    return path


def copy_repo(dst: Path, seed_records: int | None = None) -> Path:
    """The tracked and unignored files of this checkout, as a fresh git + DVC repo with the tiny profile.

    With `seed_records`, each seed file keeps only its first records (see sample_seed).
    """
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split("\n")
    for rel in filter(None, listed):
        src = ROOT / rel
        inputs = rel.startswith("models/champion/") or rel == "reports/governance.yaml"  # not run outputs
        if src.is_file() and not rel.startswith(("models/", "reports/")) or inputs:
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    if seed_records:
        sample_seed(ROOT / "data/seed", dst / "data/seed", seed_records)
    write_params(dst / "params.yaml", tiny_params())
    run("git init -q && git config user.name ratchet-test && git config user.email test@ratchet.invalid "
        "&& git add -A && git commit -qm init", dst)
    return dst


@pytest.fixture(scope="session")
def tiny_params_file(tmp_path_factory) -> Path:
    return write_params(tmp_path_factory.mktemp("params") / "params.yaml", tiny_params())


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory, tiny_params_file) -> Path:
    """A tiny random Llama with the real SmolLM2 tokenizer, written by the base stage."""
    root = tmp_path_factory.mktemp("models")
    run_stage("base", root, tiny_params_file, {"models/base": root / "base"})
    return root / "base"


SEED_SAMPLE = 300  # records per seed file for the fast fixtures: the PII scan of the whole seed takes a minute


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, tiny_params_file) -> Path:
    """The first SEED_SAMPLE records of every seed file, prepared (the whole seed goes through in test_pipeline)."""
    root = tmp_path_factory.mktemp("data")
    sample_seed(ROOT / "data/seed", root / "seed", SEED_SAMPLE)
    (root / "drops").mkdir()
    run_stage("prepare", root, tiny_params_file, {"data": root})
    return root / "prepared"


@pytest.fixture(scope="session")
def replayed(tmp_path_factory, tiny_params_file, prepared) -> Path:
    """The replay stage's folder (new/ and buffer/) for the prepared sample."""
    root = tmp_path_factory.mktemp("replay")
    run_stage("replay", root, tiny_params_file, {"data/prepared": prepared, "data/replay": root / "replay"})
    return root / "replay"


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    """Each test starts without accelerate's process-wide state: an in-process lm-eval HF model sets it up
    without mixed precision, and a training stage run later in the same process asks for bf16."""
    yield
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(scope="module")
def work(tmp_path_factory, tiny_base, prepared):
    """Params with enough steps to see learning, a passing data gate, and an empty champion."""
    from ratchet.core.io import write_json

    root = tmp_path_factory.mktemp("train")
    # A small instruction set that SFT sees several times: a tiny random model
    # learns too little from single passes to tell learning from noise.
    shutil.copytree(prepared, root / "prepared")
    sft_rows = (root / "prepared/sft/train.jsonl").read_text().splitlines()[:16]
    (root / "prepared/sft/train.jsonl").write_text("\n".join(sft_rows) + "\n")
    p = tiny_params()
    for section in ("dapt", "sft", "distill"):
        p[section].update(steps=16, log_every=8)
    p["sft"].update(steps=24, lr=1e-2)
    write_params(root / "params.yaml", p)
    write_json(root / "pass.json", {"verdict": "pass"})
    (root / "champion").mkdir()
    run_stage("replay", root, root / "params.yaml", at_work(root))
    return root


# Where the training fixtures keep what dvc.yaml wires: `work` is their scratch repository, laid out flat.
WORK = {"data/prepared": Path("prepared"), "data/replay": Path("replay"), "models/champion": Path("champion"),
        "models/dapt": Path("dapt"), "models/fisher": Path("fisher"), "models/sft": Path("sft"),
        "models/student": Path("student"), "reports/data/validation.json": Path("pass.json"),
        "reports/gates/dapt.json": Path("pass.json"), "reports/gates/sft.json": Path("pass.json"),
        "reports/gates/student.json": Path("pass.json"),
        "reports/train": Path("train")}


def at_work(work: Path, **models: Path) -> dict[str, Path]:
    return {**{k: work / v for k, v in WORK.items()}, **{f"models/{k}": v for k, v in models.items()}}


def with_lineage(folder: Path, **parents: Path) -> Path:
    """`folder`, a model a test built or changed by hand, with the lineage.json a stage would write for it now
    (parents by role): every reader refuses a model folder without one (lineage.require). A tiny test model."""
    import time

    from ratchet.models.lineage import write_lineage

    write_lineage(folder, name=folder, stage="test", params={}, parents=parents, data={}, seed=0, threads=1,
                  started=time.time(), real=False)
    return folder


@pytest.fixture(scope="module")
def dapt_model(work, tiny_base, prepared):
    run_stage("dapt", work, work / "params.yaml", at_work(work, base=tiny_base))
    return work / "dapt"


@pytest.fixture(scope="module")
def sft_adapter(work, tiny_base, dapt_model):
    run_stage("fisher", work, work / "params.yaml", at_work(work, base=tiny_base))
    run_stage("sft", work, work / "params.yaml", at_work(work, base=tiny_base))
    return work / "sft"


@pytest.fixture(scope="module")
def student(work, dapt_model, sft_adapter, prepared):
    run_stage("distill", work, work / "params.yaml", at_work(work))
    return work / "student"
