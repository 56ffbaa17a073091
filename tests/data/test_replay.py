"""The replay buffer: new versus replayed data per cycle, a capped reservoir, rebuilt exactly."""
from __future__ import annotations

import hashlib
import json

import pytest

from ratchet.core import params
from ratchet.core.io import read_json, read_jsonl
from ratchet.data.replay import reservoir

from ..conftest import run_stage, tiny_params, write_params


def record(source: str, role: str, i: int) -> dict:
    rid = hashlib.sha256(f"{source}/{role}/{i}".encode()).hexdigest()[:16]
    if role == "sft":
        return {"id": rid, "source": source, "messages": [{"role": "user", "content": f"q{i} {source}"},
                                                          {"role": "assistant", "content": f"a{i}"}]}
    return {"id": rid, "source": source, "text": f"{role} text {i} from {source}"}


def prepared(root, sizes: dict[str, dict[str, int]]):
    """A prepared-data folder: sizes[source][role] train records per source, in manifest order."""
    for role in ("domain", "sft", "general"):
        (root / role).mkdir(parents=True, exist_ok=True)
        rows = [record(src, role, i) for src, per_role in sizes.items() for i in range(per_role.get(role, 0))]
        (root / role / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "manifest.json").write_text(json.dumps({"drops": {src: {} for src in sizes}}))
    return root


def build(tmp_path, name, sizes, caps=None):
    p = tiny_params()
    p["replay"] = {**p["replay"], "max_records": caps or {"domain": 50, "sft": 40, "general": 60}}
    write_params(tmp_path / "params.yaml", p)
    data = prepared(tmp_path / name / "prepared", sizes)
    out = tmp_path / name / "replay"
    run_stage("replay", tmp_path / name, tmp_path / "params.yaml", {"data/prepared": data, "data/replay": out})
    return out


def rows(folder, name):
    return list(read_jsonl(folder / name))


SEED = {"domain": 120, "sft": 90, "general": 200}
W40 = {"domain": 30, "sft": 20, "general": 10}
W41 = {"domain": 25, "sft": 15}


def test_a_cycle_learns_the_newest_drop_and_replays_a_capped_sample_of_the_past(tmp_path):
    out = build(tmp_path, "c2", {"seed": SEED, "2026-W40": W40, "2026-W41": W41})
    manifest = read_json(out / "manifest.json")
    assert manifest["newest"] == "2026-W41" and manifest["earlier"] == ["seed", "2026-W40"]
    assert {r["source"] for r in rows(out, "new/domain.jsonl")} == {"2026-W41"}
    assert len(rows(out, "new/domain.jsonl")) == 25 and len(rows(out, "new/sft.jsonl")) == 15
    for role, cap in (("domain", 50), ("sft", 40), ("general", 60)):
        buf = rows(out, f"buffer/{role}.jsonl")
        assert len(buf) == cap and len({r["id"] for r in buf}) == cap
        assert manifest["roles"][role]["buffer"] == cap
    # domain and sft replay only what came before; general text of every source is kept in play
    assert {r["source"] for r in rows(out, "buffer/domain.jsonl")} == {"seed", "2026-W40"}
    assert manifest["roles"]["domain"]["buffer_population"] == 150
    assert manifest["roles"]["general"]["buffer_population"] == 210
    # each earlier record has the same chance: the seed holds 120 of 150 domain records
    seed_share = sum(r["source"] == "seed" for r in rows(out, "buffer/domain.jsonl")) / 50
    assert 0.65 <= seed_share <= 0.95
    assert manifest["sha256"]["buffer/domain.jsonl"] == hashlib.sha256(
        (out / "buffer/domain.jsonl").read_bytes()).hexdigest()


def test_the_buffer_is_a_reservoir_rebuilt_exactly_from_the_same_inputs(tmp_path):
    before = build(tmp_path, "c1", {"seed": SEED, "2026-W40": W40})
    after = build(tmp_path, "c2", {"seed": SEED, "2026-W40": W40, "2026-W41": W41})
    again = build(tmp_path, "c2-again", {"seed": SEED, "2026-W40": W40, "2026-W41": W41})
    for f in ("new/domain.jsonl", "new/sft.jsonl", "buffer/domain.jsonl", "buffer/sft.jsonl",
              "buffer/general.jsonl", "manifest.json"):
        assert (after / f).read_bytes() == (again / f).read_bytes(), f"{f} differs between identical runs"
    # Updating cycle 1's buffer with what cycle 2 moved into the past gives cycle 2's buffer.
    for role, cap in (("domain", 50), ("sft", 40)):
        moved = [r for r in rows(before, f"new/{role}.jsonl")]
        updated = reservoir(rows(before, f"buffer/{role}.jsonl") + moved, cap, 1234, role)
        assert [r["id"] for r in updated] == [r["id"] for r in rows(after, f"buffer/{role}.jsonl")]
        evicted = {r["id"] for r in rows(before, f"buffer/{role}.jsonl")} - {r["id"] for r in updated}
        later = build(tmp_path, f"c3-{role}", {"seed": SEED, "2026-W40": W40, "2026-W41": W41,
                                               "2026-W42": {"domain": 5, "sft": 5}})
        assert not evicted & {r["id"] for r in rows(later, f"buffer/{role}.jsonl")}, "an evicted record came back"


def test_the_seed_cycle_replays_general_text_only_and_a_new_seed_changes_the_sample(tmp_path):
    out = build(tmp_path, "c0", {"seed": SEED})
    manifest = read_json(out / "manifest.json")
    assert manifest["newest"] == "seed" and manifest["earlier"] == []
    assert rows(out, "buffer/domain.jsonl") == [] and len(rows(out, "new/domain.jsonl")) == 120
    first = {r["id"] for r in rows(out, "buffer/general.jsonl")}
    other = {r["id"] for r in reservoir(rows(out / "..", "prepared/general/train.jsonl"), 60, 99, "general")}
    assert first != other and len(other) == 60


def test_a_drop_without_a_role_trains_that_role_on_its_buffer(tmp_path):
    out = build(tmp_path, "sft-only", {"seed": SEED, "2026-W40": {"sft": 12}})
    manifest = read_json(out / "manifest.json")
    assert manifest["roles"]["domain"]["new_from"] == "buffer"
    assert rows(out, "new/domain.jsonl") == rows(out, "buffer/domain.jsonl") != []
    assert manifest["roles"]["sft"]["new_from"] == "2026-W40" and manifest["roles"]["sft"]["new"] == 12


@pytest.mark.parametrize("caps, message", [
    ({"domain": 5, "sft": 5}, "replay.max_records.general: missing"),
    ({"domain": 5, "sft": 5, "general": 0}, "replay.max_records.general: must be >= 1"),
    ({"domain": 5, "sft": 5, "general": 5, "code": 5}, "replay.max_records.code: unknown key; known keys: domain, sft, general"),
])
def test_replay_caps_are_checked(caps, message):
    with pytest.raises(params.ParamsError, match=message):
        params.build("replay", {"max_records": caps})


def test_the_newest_drops_titled_documents_become_questions_answered_in_their_own_words(tmp_path, prepared):
    """On the prepared seed sample: each titled train document gives one instruction pair whose answer is that
    document's own first sentences (every word of it in the document, in order), no held-out document gives
    one, and `replay.doc_answer_chars: 0` gives none."""
    from ratchet.data.doc_questions import QUESTIONS, pairs

    train = {r["id"]: r for r in read_jsonl(prepared / "domain/train.jsonl")}
    heldout = {r["id"] for r in read_jsonl(prepared / "domain/heldout.jsonl")}
    made = pairs(list(train.values()), 600)
    assert made and len(made) == len({p["from_doc"] for p in made})
    for p in made:
        doc = " ".join(train[p["from_doc"]]["text"].split())
        ask, reply = (m["content"] for m in p["messages"])
        assert p["from_doc"] not in heldout and any(ask.startswith(q.split("{}")[0]) for q in QUESTIONS)
        assert 80 <= len(reply) and (len(reply) <= 600 or reply.count(". ") == 0)
        at = 0
        for word in reply.split():
            at = doc.find(word, at)
            assert at >= 0, (p["id"], word)
    cfg = tiny_params()
    cfg["replay"]["doc_answer_chars"] = 0
    write_params(tmp_path / "none.yaml", cfg)
    write_params(tmp_path / "some.yaml", tiny_params())
    counts = {}
    for name in ("none", "some"):
        run_stage("replay", tmp_path, tmp_path / f"{name}.yaml", {"data/prepared": prepared,
                                                                    "data/replay": tmp_path / name})
        sft = list(read_jsonl(tmp_path / name / "new/sft.jsonl"))
        counts[name] = (len(sft), sum(r["id"].endswith("-ask") for r in sft))
    assert counts["none"][1] == 0 and counts["some"] == (counts["none"][0] + len(made), len(made))
    assert read_json(tmp_path / "some/manifest.json")["roles"]["sft"]["doc_questions"] == len(made)
