"""The weekly cycle on the tiny profile, in a temporary repo: promote; promote again from the new champion, after a
kill and a promotion cut short before its commit; refuse; do nothing for a drop seen before; refuse a concurrent
update."""
from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import yaml
from faker import Faker

from ratchet.core import audit_log
from ratchet.core.io import read_json, read_jsonl, sha256_tree
from ratchet.models.losses import lr_at

from ..conftest import copy_repo, env, run, write_drop_source

pytestmark = pytest.mark.integration
LOG = "reports/audit/log.jsonl"


def make_drop(root, name: str, seed: int):
    """New domain text and instruction pairs, English prose long enough to keep."""
    fake = Faker("en_US")
    fake.seed_instance(seed)
    folder = root / name
    (folder / "domain").mkdir(parents=True)
    (folder / "sft").mkdir()
    (folder / "domain" / "notes.jsonl").write_text(
        "".join(json.dumps({"text": fake.paragraph(nb_sentences=6)}) + "\n" for _ in range(30)))
    (folder / "sft" / "qa.jsonl").write_text("".join(
        json.dumps({"prompt": fake.sentence(nb_words=10).rstrip(".") + "?", "response": fake.paragraph(3)}) + "\n"
        for _ in range(20)))
    write_drop_source(folder, what="synthetic weekly drop: Faker prose and questions", origin="Faker (en_US)",
                      license="MIT", notes="English word-list prose")
    return folder


def update(repo, drop, week, check=False):
    return run(["python", "-m", "ratchet.cli", "update", "--drop", str(drop), "--week", week], repo, check=check)


def head(repo) -> str:
    return run(["git", "rev-parse", "HEAD"], repo).stdout.strip()


def tags(repo) -> set[str]:
    return set(run(["git", "tag", "--list"], repo).stdout.split())


def events(repo) -> list[str]:
    return [e["event"] for e in audit_log.entries(repo / LOG)]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    # no entry in data/sources.yaml: each drop declares itself in its SOURCE.yaml, as a scheduled one does
    return copy_repo(tmp_path_factory.mktemp("weekly") / "repo", seed_records=300)


@pytest.fixture(scope="module")
def drops(tmp_path_factory):
    root = tmp_path_factory.mktemp("drops")
    return {n: make_drop(root, f"drop{n}", seed=100 + n) for n in range(1, 6)}


@pytest.fixture(scope="module")
def cycle1(repo, drops):
    out = update(repo, drops[1], "2026-W40")
    assert out.returncode == 0, out.stdout + out.stderr
    return out


def test_cycle_one_promotes_commits_and_tags(repo, cycle1):
    assert "PROMOTED: champion 1" in cycle1.stdout
    champion = repo / "models/champion"
    assert {p.name for p in champion.iterdir()} == {"teacher", "onnx", "verdicts", "champion.json", "README.md",
                                                    "annex_iv.md", "annex_iv.html"}
    record = read_json(champion / "champion.json")
    # its model card: Hugging Face metadata with the shipped model's gate results as a model-index
    meta = yaml.safe_load((champion / "README.md").read_text().split("---")[1])
    assert meta["license"] == "other" and "base_model" not in meta  # the tiny model: random weights, no source
    assert meta["datasets"] == sorted(record["data"]) and any(d.startswith("data/drops/2026-W40/")
                                                               for d in meta["datasets"])
    results = {m["name"]: m["value"] for r in meta["model-index"][0]["results"] for m in r["metrics"]}
    assert results["domain_ppl"] == round(record["metrics"]["onnx"]["domain_ppl"], 4)
    assert {"general_ppl", "bbq_bias_ambig", "stereotype_pref", "canary_leaks", "answer_chrf"} <= set(results)
    annex = (champion / "annex_iv.md").read_text()
    assert "## 9. Post-market monitoring" in annex and "**NOT PROVIDED**" in annex and "TEST PROFILE" in annex
    assert record["cycle"] == 1 and record["week"] == "2026-W40" and record["previous"] is None
    assert set(record["documentation"]) == {"annex_iv.md", "annex_iv.html"}  # promoted with every mandatory part
    assert record["teacher_sha256"] == sha256_tree(champion / "teacher")
    assert {"champion@v1.0.0", "champion#prod#1"} <= tags(repo)  # a GTO version in stage prod
    shown = json.loads(run(["gto", "show", "--json"], repo).stdout)["champion"]
    assert shown["version"] == "v1.0.0" and shown["stage"] == {"prod": "v1.0.0"}
    assert "dvc push to remote 'local': done" in cycle1.stdout
    assert run(["git", "status", "--porcelain", "--", "data", "reports", "models", "dvc.lock"], repo).stdout == ""
    assert (repo / "models/champion.dvc").is_file()
    assert run(["git", "ls-files", "models/champion"], repo).stdout == "", "the champion lives in DVC, not git"
    promotion = audit_log.entries(repo / LOG)[-1]
    assert promotion["event"] == "promotion" and promotion["shipped_sha256"] == record["shipped_sha256"]
    assert promotion["drop"]["week"] == "2026-W40" and len(promotion["drop"]["files"]) == 2
    assert audit_log.verify(repo / LOG) == []
    message = run(["git", "tag", "-n20", "champion@v1.0.0"], repo).stdout
    assert f"audit entry {promotion['seq']}: {promotion['hash']}" in message


def test_the_same_drop_again_does_no_work_and_ends_the_same(repo, cycle1, drops):
    before = head(repo), (repo / LOG).read_text()
    started = time.time()
    again = update(repo, drops[1], "2026-W40")
    assert again.returncode == 0 and "processed before: promotion" in again.stdout
    assert (head(repo), (repo / LOG).read_text()) == before
    assert "dvc repro" not in again.stdout and time.time() - started < 60


@pytest.fixture(scope="module")
def cycle2(repo, cycle1, drops):
    """Cycle two, the hard way. Killed mid-repro: champion and git stay as they were. The next run retrains, swaps
    in and logs the promotion, but its commit fails (a pre-commit hook refuses it, as a kill would stop it). The run
    after that finishes the promotion without retraining."""
    seen = {"teacher_1": read_json(repo / "models/champion/champion.json")["teacher_sha256"],
            "champion": sha256_tree(repo / "models/champion"), "head": head(repo),
            "promotions": events(repo).count("promotion")}
    proc = subprocess.Popen([sys.executable, "-m", "ratchet.cli", "update", "--drop", str(drops[2]), "--week",
                             "2026-W41"], cwd=repo, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    marker = repo / "models/dapt/lineage.json"
    mtime = marker.stat().st_mtime
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if marker.is_file() and marker.stat().st_mtime > mtime:  # dapt of this cycle is done: mid-repro
            break
        time.sleep(0.2)
    seen["alive_at_kill"] = proc.poll() is None
    os.killpg(proc.pid, signal.SIGKILL)  # the update and its dvc repro, as a scheduler stopping a job does
    proc.wait()
    for _ in range(100):  # until init has reaped the orphaned dvc process too
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    seen["killed"] = {"champion": sha256_tree(repo / "models/champion"), "head": head(repo),
                      "promotions": events(repo).count("promotion")}

    hook = repo / ".git/hooks/pre-commit"
    hook.write_text("#!/bin/sh\necho commits are refused right now >&2\nexit 1\n")
    hook.chmod(0o755)
    try:
        seen["cut"] = update(repo, drops[2], "2026-W41")
    finally:
        hook.unlink()
    seen["cut_state"] = {"record": read_json(repo / "models/champion/champion.json"),
                         "champion": sha256_tree(repo / "models/champion"), "head": head(repo), "tags": tags(repo),
                         "promotions": events(repo).count("promotion"),
                         "dapt": (repo / "models/dapt/lineage.json").read_text()}
    seen["finish"] = update(repo, drops[2], "2026-W41")
    return seen


def test_an_update_killed_mid_run_then_cut_short_before_its_commit_is_finished_without_retraining(repo, cycle2):
    assert cycle2["alive_at_kill"], "the update finished before it could be killed"
    killed = cycle2["killed"]
    assert (killed["champion"], killed["head"]) == (cycle2["champion"], cycle2["head"])
    assert killed["promotions"] == cycle2["promotions"]

    cut, state = cycle2["cut"], cycle2["cut_state"]
    assert cut.returncode == 1 and "commits are refused right now" in cut.stdout, cut.stdout + cut.stderr
    record = state["record"]
    assert record["week"] == "2026-W41" and state["champion"] != cycle2["champion"]
    assert state["head"] == cycle2["head"] and f"champion@v{record['cycle']}.0.0" not in state["tags"]
    assert state["promotions"] == cycle2["promotions"] + 1

    out = cycle2["finish"]
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"finished an interrupted promotion: champion {record['cycle']}" in out.stdout
    assert "processed before: promotion" in out.stdout and "dvc repro" not in out.stdout
    assert (repo / "models/dapt/lineage.json").read_text() == state["dapt"], "nothing was retrained"
    assert {f"champion@v{record['cycle']}.0.0", f"champion#prod#{record['cycle']}"} <= tags(repo)
    assert events(repo).count("promotion") == state["promotions"]
    assert run(["git", "status", "--porcelain", "--", "data", "reports", "models", "dvc.lock"], repo).stdout == ""
    assert audit_log.verify(repo / LOG) == []


def test_cycle_two_starts_from_cycle_one_champion_and_promotes(repo, cycle2):
    teacher_1 = cycle2["teacher_1"]
    lineage = read_json(repo / "models/dapt/lineage.json")
    assert lineage["parents"]["start"] == {"path": "models/champion/teacher", "sha256": teacher_1}
    record = read_json(repo / "models/champion/champion.json")
    assert record["cycle"] == 2 and record["previous"]["cycle"] == 1
    assert {"champion@v1.0.0", "champion@v2.0.0", "champion#prod#2"} <= tags(repo)
    verdict = read_json(repo / "reports/gates/onnx.json")
    assert any(f["ref"] == "shipped" for f in verdict["findings"]), "the shipped model is gated against the champion's"
    # The references are scored again only where the drop changed their documents: the fixed evaluation sets'
    # scores come from the verdicts cycle 1's champion was promoted with.
    for ref, promoted in (("shipped", "onnx"), ("base", "base")):
        scored = read_json(repo / f"reports/gates/{ref}.json")
        lent = {t for t, f in scored["reused_from"].items() if f == f"models/champion/verdicts/{promoted}.json"}
        assert lent >= {"ratchet_general_ppl", "ratchet_bbq_gender", "ratchet_stereotype_pairs"}, scored["reused_from"]
        assert "2026-W41" in scored["by_source"]["domain_ppl"] and "ratchet_domain_ppl" not in lent
    # The cycle learns drop 2 and replays the seed and drop 1 from a buffer versioned with each cycle.
    manifest = read_json(repo / "data/replay/manifest.json")
    assert manifest["newest"] == "2026-W41" and manifest["earlier"] == ["seed", "2026-W40"]
    assert {r["source"] for r in read_jsonl(repo / "data/replay/new/domain.jsonl")} == {"2026-W41"}
    assert "2026-W40" in {r["source"] for r in read_jsonl(repo / "data/replay/buffer/domain.jsonl")}
    assert lineage["data"]["domain"]["path"] == "data/replay/new/domain.jsonl"
    assert audit_log.entries(repo / LOG)[-1]["replay"] == manifest["sha256"], "the promotion names its replay buffer"
    locked = [yaml.safe_load(run(["git", "show", f"{t}:dvc.lock"], repo).stdout)["stages"]["replay"]["outs"][0]
              for t in ("champion@v1.0.0", "champion@v2.0.0")]
    assert locked[0]["path"] == "data/replay" and locked[0]["md5"] != locked[1]["md5"]
    # The learning rate warms up and decays again: cycle 2 runs the whole schedule, as cycle 1 did.
    cfg = yaml.safe_load((repo / "params.yaml").read_text())["dapt"]
    schedule = [lr_at(s, cfg["steps"], cfg["warmup_steps"], cfg["lr"], cfg["lr_floor"]) for s in range(cfg["steps"])]
    for tag in ("champion@v1.0.0", "champion@v2.0.0"):
        lr = run(["git", "show", f"{tag}:reports/train/dapt/plots/metrics/lr.tsv"], repo).stdout.split()
        assert lr[:2] == ["step", "lr"] and [float(v) for v in lr[3::2]] == pytest.approx(schedule)
        assert schedule[-1] < schedule[0]


def test_a_cycle_that_fails_a_gate_is_refused_and_the_champion_stays(repo, cycle2, drops):
    champion_before = sha256_tree(repo / "models/champion")
    dvc_before = (repo / "models/champion.dvc").read_text()
    params = yaml.safe_load((repo / "params.yaml").read_text())
    original = (repo / "params.yaml").read_text()
    params["gates"]["dapt"] = [{"metric": "domain_ppl", "max": 1.0}]  # no model reaches perplexity 1
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        out = update(repo, drops[3], "2026-W42")
    finally:
        (repo / "params.yaml").write_text(original)
    assert out.returncode == 3, out.stdout + out.stderr
    assert "REFUSED" in out.stdout and "gate dapt: fail: domain_ppl" in out.stdout
    assert sha256_tree(repo / "models/champion") == champion_before
    assert (repo / "models/champion.dvc").read_text() == dvc_before
    refusal = audit_log.entries(repo / LOG)[-1]
    assert refusal["event"] == "refusal" and refusal["failed_gates"] == ["dapt"]
    assert "champion-refused-1" in tags(repo)
    # the committed run report says why, marks the verdicts the run never reached, and follows every cycle
    html = run(["git", "show", "champion-refused-1:reports/report.html"], repo).stdout
    assert 'id="decision">Stopped: the dapt gate refused the model.' in html
    assert "onnx: stale" in html and '<figure id="fig-cycles">' in html
    for week, outcome in (("2026-W40", "promotion"), ("2026-W41", "promotion"), ("2026-W42", "refusal")):
        assert re.search(rf"<td>#\d+ {week}</td><td>[^<]*</td><td>{outcome}</td>", html), week
    again = update(repo, drops[3], "2026-W42")
    assert again.returncode == 3 and "processed before: refusal" in again.stdout


def test_a_cycle_a_gate_cannot_decide_is_held_and_the_same_drop_again_says_so(repo, cycle2, drops):
    """A hold is not a refusal: the champion stays, the audit log names each undecided rule, exit 5."""
    champion_before = sha256_tree(repo / "models/champion")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    original = (repo / "params.yaml").read_text()
    # a precondition no model meets: the gate cannot read its other measures, so it holds, whatever they say
    params["gates"]["dapt"] = [{"metric": "domain_ppl", "max": 1.0, "precondition": True},
                               {"metric": "domain_ppl", "max_ratio": 2.0, "ref": "champion"}]
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        out = update(repo, drops[5], "2026-W44")
    finally:
        (repo / "params.yaml").write_text(original)
    assert out.returncode == 5, out.stdout + out.stderr
    assert "HELD" in out.stdout and "gate dapt: hold: domain_ppl <= 1" in out.stdout
    assert sha256_tree(repo / "models/champion") == champion_before
    hold = audit_log.entries(repo / LOG)[-1]
    assert hold["event"] == "hold" and [h["gate"] for h in hold["held"]] == ["dapt"], hold
    gate = [e for e in audit_log.entries(repo / LOG) if e["event"] == "gate" and e["model"] == "dapt"][-1]
    assert gate["verdict"] == "hold" and gate["held"][0]["rule"] == "domain_ppl <= 1", gate
    assert "champion-held-1" in tags(repo)
    again = update(repo, drops[5], "2026-W44")
    assert again.returncode == 5 and "processed before: hold" in again.stdout, again.stdout


def test_a_concurrent_update_is_refused_with_a_clear_message(repo, cycle1, drops):
    lock = repo / ".dvc/tmp/ratchet-update.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        f.seek(0)
        f.truncate()
        f.write("pid 4242 since 2026-11-24T06:00:00Z")
        f.flush()
        before = head(repo)
        out = update(repo, drops[4], "2026-W43")
    assert out.returncode == 4
    assert "another ratchet update is running (pid 4242 since 2026-11-24T06:00:00Z)" in out.stdout
    assert head(repo) == before and not (repo / "data/drops/2026-W43").exists()
