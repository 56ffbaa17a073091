"""What a model folder's card and lineage say about how it was made follows the config and the machine; a folder
without its lineage, or no longer what it records, is refused by every reader."""
import re
import shutil
from pathlib import Path

import pytest

from ratchet.core import params
from ratchet.core.io import read_json
from ratchet.models import champion as champ
from ratchet.models import lineage, modeling

from ..conftest import ROOT, at_work, run_stage, with_lineage


def test_the_card_words_replay_and_ewc_as_the_config_sets_them():
    dapt, sft = params.load(ROOT / "params.yaml", "dapt", "sft")
    off = lineage.rehearsal_words(sft.model_copy(update={"replay_fraction": 0.0, "ewc_lambda": 0.0}))
    assert off == "with no replay and no EWC"
    on = lineage.rehearsal_words(sft.model_copy(update={"replay_fraction": 0.3, "ewc_lambda": 12.5}))
    assert "in 30% of each batch" in on and "EWC penalty towards the champion (lambda 12.5)" in on
    assert "text the champion wrote itself" in lineage.rehearsal_words(dapt.model_copy(
        update={"replay_source": "champion", "replay_fraction": 0.25}))


def test_the_lineage_records_the_device(monkeypatch):
    import torch

    assert lineage.hardware(1)["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: "NVIDIA H100")
    assert {"device": "cuda", "gpu": "NVIDIA H100", "threads": 2}.items() <= lineage.hardware(2).items()


def stripped(model: Path, to: Path) -> Path:
    shutil.copytree(model, to)
    (to / "lineage.json").unlink()
    return to


def altered(model: Path, to: Path) -> Path:
    """A copy of `model` with one byte of its weights changed after its lineage was written."""
    shutil.copytree(model, to)
    weights = to / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    return to


def gate(stage: str, tmp_path: Path, params: Path, prepared: Path, **models: Path) -> None:
    run_stage(stage, tmp_path, params, {"data/prepared": prepared, "data/eval": ROOT / "data/eval",
                                        "models/champion": tmp_path / "no-champion",
                                        **{f"models/{k}": v for k, v in models.items()}})


def test_a_model_folder_without_lineage_is_refused_by_the_training_stages_and_the_gate(work, tiny_base, prepared,
                                                                                      tiny_params_file, tmp_path):
    """The base model stands in for the champion before any promotion; stripped of its lineage.json it is refused
    by dapt, fisher and the champion's gate before any work, with the folder and the fix named."""
    base = stripped(tiny_base, tmp_path / "base")
    refused = re.escape(f"{base} has no lineage.json: it was not written by a ratchet stage or was altered; "
                        "rerun the stage that makes it (dvc repro base)")
    with pytest.raises(SystemExit, match=refused):
        run_stage("dapt", work, work / "params.yaml", {**at_work(work, base=base, dapt=tmp_path / "dapt"),
                                                    "reports/train/dapt": tmp_path / "dapt-history"})
    with pytest.raises(SystemExit, match=refused):
        run_stage("fisher", work, work / "params.yaml", at_work(work, base=base, fisher=tmp_path / "fisher"))
    with pytest.raises(SystemExit, match=refused):
        gate("gate_champion", tmp_path, tiny_params_file, prepared, base=base)
    with pytest.raises(SystemExit, match=re.escape(f"{base} has no lineage.json")):
        modeling.load_model(base)
    assert not any((tmp_path / p).exists() for p in ("dapt", "fisher", "reports"))


def test_a_model_folder_changed_after_its_lineage_was_written_is_refused(work, tiny_base, prepared, tiny_params_file,
                                                                        tmp_path):
    base = altered(tiny_base, tmp_path / "base")
    changed = re.escape(f"{base}: its files do not match its lineage.json")
    with pytest.raises(SystemExit, match=changed + r".*dvc repro --force base"):
        run_stage("dapt", work, work / "params.yaml", {**at_work(work, base=base, dapt=tmp_path / "dapt"),
                                                    "reports/train/dapt": tmp_path / "dapt-history"})
    with pytest.raises(SystemExit, match=changed + r".*dvc repro --force base"):
        gate("gate_base", tmp_path, tiny_params_file, prepared, base=base)
    assert not (tmp_path / "dapt").exists()


def test_a_promoted_champion_without_its_model_or_its_lineage_is_refused_not_replaced_by_base(tiny_base, tmp_path):
    champion = tmp_path / "champion"
    (champion / "teacher").mkdir(parents=True)
    assert champ.teacher_or_base(champion, tiny_base) == tiny_base  # before any promotion: base stands in
    (champion / "champion.json").write_text('{"cycle": 1}')
    with pytest.raises(SystemExit, match=re.escape(f"{champion / 'teacher'} holds no model, yet")):
        champ.teacher_or_base(champion, tiny_base)
    with pytest.raises(SystemExit, match="holds no model"):
        champ.shipped_or_base(champion, tiny_base)
    shutil.rmtree(champion / "teacher")
    teacher = stripped(tiny_base, champion / "teacher")
    assert champ.teacher_or_base(champion, tiny_base) == teacher
    with pytest.raises(SystemExit, match=re.escape(f"{teacher} has no lineage.json") + r".*dvc checkout "
                       + re.escape(f"{champion}.dvc")):
        lineage.require(teacher, champ.made_by(teacher, champion))


def test_the_audit_check_fails_on_a_parent_missing_stripped_or_changed(tiny_base, tmp_path):
    parent = shutil.copytree(tiny_base, tmp_path / "parent")
    child = with_lineage(shutil.copytree(tiny_base, tmp_path / "child"), start=parent)
    assert lineage.check_lineage(child) == (read_json(child / "lineage.json"), [])
    (parent / "lineage.json").rename(tmp_path / "kept.json")
    assert lineage.check_lineage(child)[1] == [f"{child}: parent start ({parent}) has no lineage.json"]
    (tmp_path / "kept.json").rename(parent / "lineage.json")
    (parent / "README.md").write_text("edited")
    assert lineage.check_lineage(child)[1] == [f"{child}: parent start ({parent}) changed since this artifact was made"]
    shutil.rmtree(parent)
    assert lineage.check_lineage(child)[1] == [f"{child}: parent start ({parent}) is missing"]
    (child / "lineage.json").write_text("{not json")
    assert "not a lineage record" in lineage.check_lineage(child)[1][0]
    (child / "lineage.json").unlink()
    assert lineage.check_lineage(child)[1] == [
        f"{child}: no lineage.json: it was not written by a ratchet stage or was altered"]


def test_a_folder_is_hashed_once_while_its_files_stay_as_they_were(tiny_base, tmp_path, monkeypatch):
    model = shutil.copytree(tiny_base, tmp_path / "model")
    calls = []
    sha256_tree = lineage.sha256_tree
    monkeypatch.setattr(lineage, "sha256_tree", lambda p, *a: calls.append(p) or sha256_tree(p, *a))
    for _ in range(3):
        lineage.require(model, "base")
    assert len(calls) == 1
    (model / "README.md").write_text("edited")  # its size and time change: hashed again, and refused
    with pytest.raises(SystemExit, match="its files do not match"):
        lineage.require(model, "base")
    (model / "lineage.json").write_text("[]")
    with pytest.raises(SystemExit, match=re.escape(f"{model / 'lineage.json'} cannot be read as a lineage record")):
        lineage.require(model, "base")
