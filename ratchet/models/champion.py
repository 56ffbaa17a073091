"""The champion: the last promoted model, the anchor of the next cycle, and what is shipped.

    models/champion/            DVC-tracked after the first promotion (models/champion.dvc; `dvc pull` restores it)
      teacher/                  the tuned teacher, dapt + sft merged, safetensors: dapt starts from it, the
                                Fisher and EWC anchor to it, dapt's and sft's gates compare with its scores
      onnx/                     the shipped int8 ONNX model: the next shipped model is compared with it
      verdicts/                 the data gate and every gate verdict of the run that made it
      champion.json             the promotion record: cycle, week, run, hashes of models, verdicts and drops
      README.md                 model card

Only `ratchet promote` writes it. Before the first promotion the folder holds
only its README and the base model stands in for both the teacher and the
shipped model.
"""
from __future__ import annotations

from pathlib import Path

from ratchet.core.io import read_json

TEACHER, SHIPPED, VERDICTS, RECORD = "teacher", "onnx", "verdicts", "champion.json"


def teacher_or_base(champion: str | Path, base: str | Path) -> Path:
    """The model the next cycle starts from: the promoted teacher, or base before any promotion."""
    teacher = Path(champion) / TEACHER
    return teacher if (teacher / "config.json").is_file() else _before_any_promotion(champion, teacher, base)


def shipped_or_base(champion: str | Path, base: str | Path) -> Path:
    """The shipped model new ones must not fall behind: the champion's int8 ONNX model, or base before any."""
    shipped = Path(champion) / SHIPPED
    return shipped if (shipped / "model.onnx").is_file() else _before_any_promotion(champion, shipped, base)


def _before_any_promotion(champion: str | Path, missing: Path, base: str | Path) -> Path:
    # a promoted champion with its model gone must not quietly hand the next cycle the base model instead
    if (Path(champion) / RECORD).is_file():
        raise SystemExit(f"{missing} holds no model, yet {Path(champion) / RECORD} records a promotion: restore the "
                         f"champion (`dvc checkout {champion}.dvc`, or `dvc pull` on a new clone)")
    return Path(base)


def made_by(model: str | Path, champion: str | Path) -> str:
    """The stage that writes `model`, one of the folders above: `promote` for the champion's own, `base` for the
    stand-in (for the fix a refusal names: lineage.require)."""
    return "promote" if Path(model).is_relative_to(Path(champion)) else "base"


def record(champion: str | Path) -> dict | None:
    """champion.json of the current champion, or None before the first promotion."""
    path = Path(champion) / RECORD
    return read_json(path) if path.is_file() else None
