"""The Annex IV documentation: what people must write, and how its absence shows."""
from __future__ import annotations


def test_docs_check_names_every_empty_mandatory_part_until_people_write_it(tmp_path):
    import yaml

    from ratchet.reporting import annex

    (tmp_path / "reports").mkdir()
    gov = tmp_path / annex.GOVERNANCE
    gov.write_text(yaml.safe_dump({k: "" for k in annex.MANDATORY}))
    missing = annex.check(gov)
    assert len(missing) == len(annex.MANDATORY) and "`risk_management` is empty (Annex IV point 5" in missing[3]
    gov.write_text(yaml.safe_dump({k: f"written by the provider: {k}" for k in annex.MANDATORY} | {"provider": " "}))
    assert annex.check(gov) == [f"{gov}: `provider` is empty (Annex IV point 1(a): the provider "
                                     "placing the system on the market or putting it into service)"]
    gov.write_text(yaml.safe_dump({k: f"written by the provider: {k}" for k in annex.MANDATORY}))
    assert annex.check(gov) == []
    section = annex.Section("5. Risk management system (Article 9)").human(annex.governance(gov),
                                                                          "risk_management")
    assert section.blocks == [("p", "written by the provider: risk_management")]
    empty = annex.Section("7").human({}, "standards_applied")
    html = annex.to_html("doc", [empty])
    assert "NOT PROVIDED" in annex.to_markdown("doc", [empty]) and 'class="missing"' in html


def test_model_generated_training_text_is_listed_from_the_lineages():
    """Self-distilled replies and rehearsal blocks a model wrote are named in 2(d); text from a file is not."""
    from ratchet.reporting.annex import model_generated

    lineages = {
        "dapt": {"rehearsal": {"source": "models/champion (its own samples)", "model_generated": True,
                               "blocks": 64, "tokens": 16384, "temperature": 1.0}},
        "sft": {"self_distilled": {"model_generated": True, "generated_by": "models/dapt", "replies": 120,
                                   "rewrite": 57}},
        "student": {"rehearsal": {"source": "data/replay/buffer/general.jsonl", "model_generated": False}},
        "base": {},
    }
    rows = model_generated(lineages)
    assert [r[0] for r in rows] == ["dapt", "sft"]
    assert rows[0][3] == "64 blocks, 16384 tokens" and rows[1][3] == "57 replies"
