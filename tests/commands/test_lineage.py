"""`ratchet lineage` names a model whose parent is missing or lost its lineage.json, and a model folder with none:
the content hash leaves lineage.json out, so a stripped folder still hashes as it did."""
from __future__ import annotations

import shutil
from pathlib import Path

from ratchet.commands.lineage import Tracer

from ..conftest import with_lineage


def test_the_chain_check_names_a_parent_missing_or_without_its_lineage(tiny_base, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # lineage records paths from the repository root, as the stages run
    shutil.copytree(tiny_base, "models/base")
    with_lineage(shutil.copytree(tiny_base, "models/dapt"), start=Path("models/base"))

    def problems() -> dict[str, list[str]]:
        tracer = Tracer(tmp_path)
        tracer.trace(str(tmp_path / "models/dapt"))
        return {path: node.problems for path, node in tracer.nodes.items()}

    assert problems() == {"models/dapt": [], "models/base": []}
    (tmp_path / "models/base/lineage.json").unlink()
    assert problems() == {"models/dapt": ["models/dapt: parent start (models/base) has no lineage.json"],
                          "models/base": ["models/base: a model folder without lineage.json: it was not written by "
                                          "a ratchet stage or was altered"]}
    shutil.rmtree(tmp_path / "models/base")
    assert problems()["models/dapt"] == ["models/dapt: parent start (models/base) is missing"]
