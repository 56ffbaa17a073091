"""A refusal is final for its drop: a stage's check that the same drop would fail again (here prepare's PII cap)
is logged and committed as a refusal with its reason, and the same drop again reports it without retraining."""
from __future__ import annotations

import json

import pytest
from faker import Faker

from ratchet.core import audit_log

from ..conftest import copy_repo, run, write_drop_source

pytestmark = pytest.mark.integration


def ssn_drop(root):
    """A drop whose every record carries a US social security number: the default policy drops each one, far past
    pii.max_dropped_fraction."""
    fake = Faker("en_US")
    fake.seed_instance(7)
    folder = root / "drop" / "domain"
    folder.mkdir(parents=True)
    (folder / "records.jsonl").write_text("".join(
        json.dumps({"text": f"{fake.paragraph(nb_sentences=4)} The customer's SSN is {fake.ssn()}."}) + "\n"
        for _ in range(20)))
    write_drop_source(folder.parent, personal_data="contains US social security numbers (planted by the test)")
    return folder.parent


def test_a_drop_a_stage_refuses_is_refused_once_and_not_retrained(tmp_path):
    repo = copy_repo(tmp_path / "repo", seed_records=40)
    drop = ssn_drop(tmp_path)
    update = ["python", "-m", "ratchet.cli", "update", "--drop", str(drop), "--week", "2026-W41"]

    first = run(update, repo, check=False)
    assert first.returncode == 3, first.stdout + first.stderr
    [refusal] = [e for e in audit_log.entries(repo / "reports/audit/log.jsonl") if e["event"] == "refusal"]
    assert refusal["reasons"][0].startswith("stage prepare: prepare: PII policy cap exceeded")
    assert "records dropped for PII > pii.max_dropped_fraction 5%" in refusal["reasons"][0]
    assert "champion-refused-1" in run(["git", "tag", "--list"], repo).stdout.split()
    committed = ["data/drops", "dvc.lock", "reports"]  # the drop, the audit log and the reports of the refusal
    assert run(["git", "status", "--porcelain", "--", *committed], repo).stdout.strip() == ""

    again = run(update, repo, check=False)
    assert again.returncode == 3, again.stdout + again.stderr
    assert "this drop was processed before: refusal" in again.stdout and "dvc repro" not in again.stdout
    assert "PII policy cap exceeded" in again.stdout
    assert [e["event"] for e in audit_log.entries(repo / "reports/audit/log.jsonl")].count("refusal") == 1
