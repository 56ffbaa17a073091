"""verify-repro's comparison of a recorded output with its rerun: what counts as the same."""
from __future__ import annotations

import json

import torch
from safetensors.torch import save_file

from ratchet.commands.verify_repro import compare


def test_same_bytes_are_identical_and_clock_readings_alone_do_not_count(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"loss": [1.0, 0.5], "wall_time_s": 10.0, "finished_utc": "2026-11-25T00:00:00Z"}))
    b.write_bytes(a.read_bytes())
    assert compare(a, b) == ("identical", "")
    b.write_text(json.dumps({"loss": [1.0, 0.5], "wall_time_s": 12.5, "finished_utc": "2026-11-25T01:00:00Z"}))
    assert compare(a, b) == ("clock", "")


def test_a_result_that_differs_is_named_by_its_key_path(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"loss": [1.0, 0.5], "params": {"seed": 1}, "wall_time_s": 1}))
    b.write_text(json.dumps({"loss": [1.0, 0.25], "params": {"seed": 2}, "wall_time_s": 2}))
    how, where = compare(a, b)
    assert how == "differs" and where == "loss[1], params.seed"


def test_jsonl_rows_are_compared_row_by_row(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text('{"id": 1, "text": "x"}\n{"id": 2, "text": "y"}\n')
    b.write_text('{"id": 1, "text": "x"}\n{"id": 2, "text": "z"}\n')
    assert compare(a, b) == ("differs", "[1].text")


def test_weights_that_differ_say_by_how_much(tmp_path):
    w = {"a": torch.zeros(3), "b": torch.ones(2)}
    save_file(w, tmp_path / "x.safetensors")
    save_file({"a": torch.tensor([0.0, 1e-3, 0.0]), "b": torch.ones(2)}, tmp_path / "y.safetensors")
    how, detail = compare(tmp_path / "x.safetensors", tmp_path / "y.safetensors")
    assert how == "differs" and detail == "1 of 2 tensors differ, the largest by 0.001 (a)"


def test_a_report_differing_only_in_its_time_stamp_and_duration_is_the_same(tmp_path):
    a, b = tmp_path / "a.md", tmp_path / "b.md"
    a.write_text("# Gate\n\nscored 2026-11-25T03:33:14Z in 49 s\n\n| domain_ppl | 93.4 |\n")
    b.write_text("# Gate\n\nscored 2026-11-25T04:01:02Z in 51 s\n\n| domain_ppl | 93.4 |\n")
    assert compare(a, b) == ("clock", "")
    b.write_text("# Gate\n\nscored 2026-11-25T04:01:02Z in 51 s\n\n| domain_ppl | 93.5 |\n")
    assert compare(a, b) == ("differs", "from line 5")

