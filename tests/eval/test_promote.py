"""Promotion requires the documentation people write: a run whose Annex IV has an empty mandatory part is refused."""
from __future__ import annotations

import shutil

from ratchet.core import params
from ratchet.core.io import write_json
from ratchet.eval import promote

from ..conftest import ROOT, run


def test_a_run_is_refused_while_a_mandatory_annex_part_is_empty(tmp_path):
    shutil.copy2(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    run("git init -q && python -m dvc init -q", tmp_path)
    lay, cfg = promote.layout(tmp_path), params.PromoteConfig(accept_test_models=False, tag_prefix="champion")
    lay.summary.parent.mkdir(parents=True)

    def documentation_problems(documentation) -> list[str]:
        write_json(lay.summary, {"problems": [], **({"documentation": documentation} if documentation else {})})
        return [p for p in promote.check(tmp_path, lay, cfg).problems if p.startswith("documentation")]

    missing = ["reports/governance.yaml: `provider` is empty (Annex IV point 1(a): the provider)"]
    [empty] = documentation_problems({"governance": "reports/governance.yaml", "missing": missing})
    assert empty.startswith("documentation: 1 mandatory Annex IV parts are empty in reports/governance.yaml: "
                            "`provider`")
    assert "ratchet docs check" in empty
    [unsaid] = documentation_problems(None)  # a summary from before the audit recorded it
    assert "does not say that the Annex IV documentation was written" in unsaid
    assert documentation_problems({"governance": "reports/governance.yaml", "missing": []}) == []


def test_the_shipped_governance_file_has_every_mandatory_part():
    from ratchet.reporting import annex

    assert annex.check(ROOT / "reports/governance.yaml") == []
