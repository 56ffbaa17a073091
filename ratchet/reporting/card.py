"""The champion's model card (README.md): a Hugging Face card whose prose is templates/model_card.md.j2 and whose
statements about how the model was made are read from the lineages of the run it came from.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from ratchet.core.io import read_json
from ratchet.reporting import facts
from ratchet.reporting.render import render as render_template

TEMPLATE = "model_card.md.j2"


def lineages(shipped: Path) -> dict[str, dict]:
    """The lineage of the shipped model and of each model it came from in this run, by stage, following the
    parents each lineage names; a previous champion (stage promote) ends the walk."""
    out, todo = {}, [Path(shipped)]
    while todo:
        path = todo.pop(0) / "lineage.json"
        if not path.is_file():
            continue
        lin = read_json(path)
        if lin.get("stage") in out or lin.get("stage") == "promote":
            continue
        out[lin["stage"]] = lin
        todo += [Path(p["path"]) for p in (lin.get("parents") or {}).values()]
    return out


def render(meta: dict, record: dict, lins: dict[str, dict]) -> str:
    """The card: `meta` its YAML front matter, `record` the champion's record (champion.json), `lins` the run's
    lineages (lineages())."""
    shipped = lins.get("quantize", {})
    return render_template(TEMPLATE, meta=yaml.safe_dump(meta, sort_keys=False, width=120).strip(), r=record,
                           run=facts.run(lins), hardware=facts.hardware(shipped) if shipped else None, nan=float("nan"))
