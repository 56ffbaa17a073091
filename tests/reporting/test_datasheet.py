"""The datasheet says what the PII report records of the allowed entities that reached the train split, and why
it cannot say when the report does not count them."""
from __future__ import annotations

from ratchet.reporting.datasheet import reached_training

POLICY = {"EMAIL_ADDRESS": "redact", "US_SSN": "drop", "PERSON": "allow", "LOCATION": "allow"}


def test_allowed_entities_count_their_hits_in_the_train_split_and_zero_when_none_was_found():
    findings = {"PERSON": {"hits": 9, "records": 7, "allow": 7, "train_hits": 5, "train_records": 4},
                "EMAIL_ADDRESS": {"hits": 2, "records": 2, "redact": 2, "train_hits": 0, "train_records": 0}}
    assert reached_training(findings, POLICY, []) == {"LOCATION": {"hits": 0, "records": 0},
                                                      "PERSON": {"hits": 5, "records": 4}}


def test_an_entity_not_scanned_or_a_report_without_the_count_is_said_to_be_uncounted():
    old = {"PERSON": {"hits": 9, "records": 7, "allow": 7}}
    assert reached_training(old, POLICY, ["LOCATION"]) == {
        "LOCATION": "not scanned (pii.scan_allowed false): not counted",
        "PERSON": "not recorded by this PII report: rerun prepare"}
    assert reached_training("no PII report given", POLICY, []) == {"LOCATION": "no PII report given",
                                                                   "PERSON": "no PII report given"}
