"""The champion in the GTO registry: each promotion's commit is a version of dvc.yaml's champion artifact in stage
prod, its tag anchors the audit log for `ratchet audit verify`; refusals stay out of the registry."""
from __future__ import annotations

import json
import shutil
import time

from ratchet.core import audit_log, params
from ratchet.eval import promote

from ..conftest import ROOT, run

LOG = "reports/audit/log.jsonl"


def outcome_of(root, lay, cfg, event: str, **fields) -> promote.Outcome:
    entry = audit_log.append(lay.audit_log, event, **fields)
    return promote.Outcome(promote.PROMOTED if event == "promotion" else promote.REFUSED, [], entry,
                           promote.tag_name(cfg, lay, entry))


def test_two_promotions_are_two_gto_versions_with_the_stage_on_the_newest(tmp_path):
    shutil.copy2(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    run("git init -q && git config user.name t && git config user.email t@t.invalid && python -m dvc init -q "
        "&& git add -A && git commit -qm init", tmp_path)
    lay, cfg = promote.layout(tmp_path), params.PromoteConfig(accept_test_models=False, tag_prefix="champion")
    assert lay.artifact == "champion"

    for cycle in (1, 2):
        if cycle == 2:
            time.sleep(1.1)  # GTO orders stage assignments by their tags' time, in whole seconds
        out = outcome_of(tmp_path, lay, cfg, "promotion", run_id=f"run{cycle}", cycle=cycle)
        assert out.tag == f"champion@v{cycle}.0.0"
        promote.commit(tmp_path, out, f"Promote: {out.tag}", [LOG])
        promote.commit(tmp_path, out, f"Promote: {out.tag}", [LOG])  # again: nothing is registered twice
    refused = outcome_of(tmp_path, lay, cfg, "refusal", run_id="run3", reasons=["gate dapt: hold: too few"])
    assert refused.tag == "champion-refused-1"
    promote.commit(tmp_path, refused, "Refuse", [LOG])

    shown = json.loads(run(["gto", "show", "--json"], tmp_path).stdout)
    assert shown == {"champion": {"version": "v2.0.0", "stage": {"prod": "v2.0.0"}, "registered": True,
                                  "active": True}}, "the refusal is no version"
    versions = json.loads(run(["gto", "show", "champion", "--json"], tmp_path).stdout)
    assert sorted(v["version"] for v in versions) == ["v1.0.0", "v2.0.0"]
    tags = set(run(["git", "tag", "--list"], tmp_path).stdout.split())
    assert tags == {"champion@v1.0.0", "champion@v2.0.0", "champion#prod#1", "champion#prod#2", "champion-refused-1"}
    promotion = audit_log.entries(tmp_path / LOG)[1]
    message = run(["git", "tag", "-n20", "champion@v2.0.0"], tmp_path).stdout
    assert f"audit entry {promotion['seq']}: {promotion['hash']}" in message

    verified = run(["python", "-m", "ratchet.cli", "audit", "verify"], tmp_path)
    assert "3 entries, hash chain intact, agrees with the head recorded in 3 git tags" in verified.stdout
    # a version registered by hand, and one whose tag names a refusal: the registry no longer matches the log
    run(["gto", "register", "champion", "HEAD", "--version", "v3.0.0"], tmp_path)
    run(["git", "tag", "-a", "champion@v4.0.0", "-m", f"audit entry 2: {audit_log.entries(tmp_path / LOG)[2]['hash']}",
         "HEAD~1"], tmp_path)
    bad = run(["python", "-m", "ratchet.cli", "audit", "verify"], tmp_path, check=False)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "champion@v3.0.0: a version of champion in the registry that records no audit entry" in bad.stderr
    assert "champion@v4.0.0 records audit entry 2 (a refusal, cycle None), not the promotion of v4.0.0" in bad.stderr
