"""prepare: bad inputs, the accounting identity, dedup, language, split stability; validate's datasheets."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import yaml
from faker import Faker

from ratchet.core.io import read_json, read_jsonl, sha256_file
from stages import datasheets, validate

from ..conftest import ROOT, env, run_stage, stage_argv, stage_cmd, tiny_params, write_drop_source, write_params

WEEK = "2026-W48"


def paragraphs(n: int, seed: int) -> list[str]:
    fake = Faker("en_US")
    fake.seed_instance(seed)
    return [fake.paragraph(nb_sentences=5) for _ in range(n)]


def jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def write(root, files: dict) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())


@pytest.fixture
def seed(tmp_path):
    """A small seed: 12 English paragraphs per text role, 12 instruction pairs."""
    root = tmp_path / "seed"
    pairs = [{"prompt": f"Explain point {i} of the notes, please.", "response": p}
             for i, p in enumerate(paragraphs(12, seed=3))]
    write(root, {"domain/notes.jsonl": jsonl({"text": t} for t in paragraphs(12, seed=1)),
                 "general/prose.jsonl": jsonl({"text": t} for t in paragraphs(12, seed=2)),
                 "sft/pairs.jsonl": jsonl(pairs)})
    (tmp_path / "drops").mkdir()
    return root


def at(tmp_path, seed, prepared="prepared") -> dict:
    """Where a test keeps what dvc.yaml's prepare stage reads and writes."""
    return {"data/seed": seed, "data/drops": tmp_path / "drops", "data/prepared": tmp_path / prepared,
            "reports/data/pii.json": tmp_path / "pii.json"}


def params_file(tmp_path, **sections):
    p = tiny_params()
    for name, values in sections.items():
        p[name] = {**p.get(name, {}), **values}
    return write_params(tmp_path / "params.yaml", p)


def run(tmp_path, seed, **sections) -> dict:
    run_stage("prepare", tmp_path, params_file(tmp_path, **sections), at(tmp_path, seed))
    manifest = read_json(tmp_path / "prepared/manifest.json")
    for scope in ("inputs", "drops", "roles"):
        for name, a in manifest[scope].items():
            assert a["in"] == a["kept"] + a["redacted"] + a["quarantined"], (scope, name, a)
            assert a["quarantined"] == sum(a["rules"].values()), (scope, name, a)
            assert a["kept"] + a["redacted"] == sum(a["splits"].values()), (scope, name, a)
    return manifest


def quarantine(tmp_path) -> list[dict]:
    return list(read_jsonl(tmp_path / "prepared/quarantine.jsonl"))


def kept(tmp_path, role: str) -> dict[str, str]:
    """id -> split of every kept record of a role."""
    return {r["id"]: s for s in ("train", "heldout") for r in read_jsonl(tmp_path / f"prepared/{role}/{s}.jsonl")}


def test_seed_accounting_holds_per_drop_and_role(tmp_path, seed):
    manifest = run(tmp_path, seed)
    assert manifest["drops"]["seed"]["in"] == 36 and manifest["drops"]["seed"]["quarantined"] == 0
    assert {r: a["in"] for r, a in manifest["roles"].items()} == {"domain": 12, "sft": 12, "general": 12}
    inp = manifest["inputs"][f"{seed.as_posix()}/domain/notes.jsonl"]
    assert inp["sha256"] == sha256_file(seed / "domain/notes.jsonl")


def test_bad_lines_are_quarantined_with_the_record_where_and_why(tmp_path, seed):
    good = paragraphs(3, seed=9)
    lines = [json.dumps({"text": good[0]}).encode(),
             b'{"text": "an unterminated string',
             b'{"text": "caf\xe9 au lait, written in Latin-1 by an old exporter tool"}',
             json.dumps({"txt": "the field is misspelled in this record of the drop"}).encode(),
             b"[1, 2, 3]",
             json.dumps({"text": "x" * 10_500_000}).encode(),
             json.dumps({"text": good[1]}).encode()]
    write(tmp_path / "drops", {f"{WEEK}/general/mixed.jsonl": b"\n".join(lines) + b"\n\n",
                               f"{WEEK}/domain/notes.txt": good[2].encode() + b"\n\n"
                                                              + b"Gr\xfc\xdfe aus einer alten Datei, kaputt.\n"})
    manifest = run(tmp_path, seed)
    q = {(e["file"].rsplit("/", 1)[-1], e["line"]): e for e in quarantine(tmp_path)}
    assert q[("mixed.jsonl", 2)]["rule"] == "parse" and "malformed JSON" in q[("mixed.jsonl", 2)]["reason"]
    assert q[("mixed.jsonl", 2)]["raw"] == '{"text": "an unterminated string'
    assert q[("mixed.jsonl", 3)]["reason"] == "not valid UTF-8 at byte 13"
    assert "caf\\xe9 au lait" in q[("mixed.jsonl", 3)]["raw"], "undecodable bytes are kept, escaped"
    assert q[("mixed.jsonl", 4)]["rule"] == "schema" and q[("mixed.jsonl", 4)]["record"] == {
        "txt": "the field is misspelled in this record of the drop"}
    assert q[("mixed.jsonl", 5)]["reason"] == "not a JSON object" and q[("mixed.jsonl", 5)]["record"] == [1, 2, 3]
    big = q[("mixed.jsonl", 6)]
    assert big["rule"] == "length" and big["reason"].startswith("length 10500000 outside")
    assert len(big["record"]["text"]) == 10_500_000
    assert q[("notes.txt", 3)]["rule"] == "parse" and "Gr\\xfc\\xdfe" in q[("notes.txt", 3)]["raw"]
    for e in q.values():
        assert e["source"] == WEEK and e["role"] in ("general", "domain") and e["file"].startswith(str(tmp_path))
    drop = manifest["drops"][WEEK]
    assert (drop["in"], drop["kept"], drop["quarantined"]) == (9, 3, 6)
    assert manifest["files"][f"{(tmp_path / 'drops').as_posix()}/{WEEK}/general/mixed.jsonl"] == {
        "source": WEEK, "role": "general", "in": 7, "kept": 2, "quarantined": 5}


@pytest.mark.parametrize("name, content, message", [
    ("empty.jsonl", b"", r"empty file \(no records\); add records to it or leave it out"),
    ("blank.txt", b"\n\n  \n", r"empty file \(no records\)"),
    ("image.jsonl", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)),
     r"line 3: looks binary \(NUL byte at offset 8\)"),
    ("utf16.jsonl", '{"text": "exported by a Windows tool as Unicode"}\r\n'.encode("utf-16"),
     r"UTF-16 encoded .*save it as UTF-8"),
    ("latin1.jsonl", '{"text": "Übergrößenträger"}\n{"text": "Ärger"}\n'.encode("latin-1"),
     r"no line is valid UTF-8; re-encode the file as UTF-8"),
    ("table.jsonl", b"id,text\n1,hello world\n", r"no line is a JSON value; is it JSON Lines"),
    ("notes.csv", b"id,text\n", r"unsupported file type '.csv'"),
])
def test_files_prepare_cannot_read_stop_the_stage_naming_the_file(tmp_path, seed, name, content, message):
    write(tmp_path / "drops", {f"{WEEK}/general/{name}": content})
    with pytest.raises(SystemExit, match=message) as e:
        run(tmp_path, seed)
    assert f"{WEEK}/general/{name}" in str(e.value)
    assert not (tmp_path / "prepared").exists()


def test_a_windows_export_with_a_byte_order_mark_and_crlf_reads_like_any_other(tmp_path, seed):
    texts = paragraphs(4, seed=30)
    bom_crlf = "\ufeff" + "".join(json.dumps({"text": t}) + "\r\n" for t in texts[:2])
    txt = "\ufeff" + texts[2].replace(". ", ".\r\n", 1) + "\r\n\r\n" + texts[3] + "\r\n"
    write(tmp_path / "drops", {f"{WEEK}/general/export.jsonl": bom_crlf.encode("utf-8"),
                               f"{WEEK}/domain/export.txt": txt.encode("utf-8")})
    manifest = run(tmp_path, seed)
    assert manifest["drops"][WEEK]["in"] == 4 and manifest["drops"][WEEK]["kept"] == 4
    kept_texts = [r["text"] for s in ("train", "heldout") for role in ("general", "domain")
                  for r in read_jsonl(tmp_path / f"prepared/{role}/{s}.jsonl")]
    assert texts[0] in kept_texts and texts[3] in kept_texts
    assert texts[2].replace(". ", ".\n", 1) in kept_texts, "CRLF inside a text block becomes LF"
    assert not any("\ufeff" in t or "\r" in t for t in kept_texts)


def test_a_bad_file_exits_non_zero_without_a_traceback(tmp_path, seed):
    write(tmp_path / "drops", {f"{WEEK}/domain/blob.txt": b"\x00\x01\x02binary"})
    r = subprocess.run(stage_cmd("prepare", tmp_path, params_file(tmp_path), at(tmp_path, seed, "out")),
                       cwd=ROOT, env=env(), capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"{WEEK}/domain/blob.txt: line 1: looks binary" in r.stderr


def test_a_drop_of_only_duplicates_is_quarantined_and_warned_about(tmp_path, seed, capsys):
    prose = [json.loads(line)["text"] for line in (seed / "general/prose.jsonl").read_text().splitlines()]
    near = [t.replace(".", ";", 1) + " Indeed." for t in prose[:4]]
    write(tmp_path / "drops", {f"{WEEK}/general/again.jsonl": jsonl({"text": t} for t in prose[:4] + near)})
    manifest = run(tmp_path, seed)
    drop = manifest["drops"][WEEK]
    assert drop["in"] == drop["quarantined"] == 8 and drop["rules"]["exact_dup"] == 4 and drop["rules"]["near_dup"] == 4
    reasons = [e["reason"] for e in quarantine(tmp_path)]
    assert all(re.match(rf"(exact duplicate|near duplicate \(Jaccard ~[01]\.\d\d\)) of {re.escape(str(seed))}"
                        r"/general/prose\.jsonl:\d+$", r) for r in reasons), reasons
    assert f"WARNING: drop {WEEK}: every record is a duplicate" in capsys.readouterr().out


def test_near_duplicates_go_and_different_texts_stay(tmp_path, seed):
    base = " ".join(paragraphs(3, seed=5))  # about 100 words
    variant = base.replace(base.split()[10], "completely", 1)
    other = " ".join(paragraphs(3, seed=6))
    write(tmp_path / "drops", {f"{WEEK}/domain/new.jsonl": jsonl({"text": t} for t in (base, variant, other))})
    manifest = run(tmp_path, seed)
    (q,) = quarantine(tmp_path)
    assert q["rule"] == "near_dup" and q["line"] == 2 and q["reason"].endswith(f"{WEEK}/domain/new.jsonl:1")
    assert manifest["drops"][WEEK]["kept"] == 2
    # the threshold is a param: at 1.0 near-dup removal is off
    assert run(tmp_path, seed, prepare={"near_dup_threshold": 1.0})["drops"][WEEK]["kept"] == 3


def test_language_filter_keeps_english_and_quarantines_other_languages(tmp_path, seed):
    texts = {"de": "Die Katze sitzt auf der Matte und schläft, weil sie nach dem langen Tag im Garten sehr müde ist.",
             "fr": "Le chat est assis sur le tapis et dort parce qu'il est très fatigué après une longue journée.",
             "en": "The cat sits on the mat and sleeps because it is very tired after a long day in the garden."}
    write(tmp_path / "drops", {f"{WEEK}/general/mixed.jsonl": jsonl({"text": t} for t in texts.values())})
    run(tmp_path, seed)
    q = quarantine(tmp_path)
    assert [(e["rule"], e["reason"][:11]) for e in q] == [("language", "language de"), ("language", "language fr")]
    assert q[0]["record"]["text"] == texts["de"]
    assert run(tmp_path, seed, prepare={"languages": ["en", "de", "fr"]})["drops"][WEEK]["kept"] == 3


def test_adding_a_drop_never_moves_a_record_between_splits(tmp_path, seed):
    run(tmp_path, seed, prepare={"heldout_fraction": 0.3})
    before = {role: kept(tmp_path, role) for role in ("domain", "general", "sft")}
    assert "heldout" in before["general"].values() and "train" in before["general"].values()
    write(tmp_path / "drops", {f"{WEEK}/general/more.jsonl": jsonl({"text": t} for t in paragraphs(20, seed=11)),
                               f"{WEEK}/domain/more.jsonl": jsonl({"text": t} for t in paragraphs(20, seed=12))})
    run(tmp_path, seed, prepare={"heldout_fraction": 0.3})
    for role, ids in before.items():
        after = kept(tmp_path, role)
        assert {i: after[i] for i in ids} == ids, f"{role}: a record changed split"
    assert len(kept(tmp_path, "general")) == 32


def test_validate_writes_the_gate_summary_and_a_datasheet_per_role(tmp_path, seed):
    write(tmp_path / "drops", {f"{WEEK}/general/week.jsonl": jsonl(
        [{"text": t} for t in paragraphs(3, seed=21)] + [{"text": "Reach the editor at ed.itor@example.org for the "
                                                                  "errata of the second edition, please."}])})
    sources = tmp_path / "sources.yaml"
    sources.write_text(yaml.safe_dump({"sources": [
        {"path": "seed/*/*.jsonl", "what": "synthetic seed", "origin": "Faker", "license": "MIT",
         "collected": "tests", "personal_data": "none", "notes": "lorem-style English from a word list"}]}))
    p = params_file(tmp_path, prepare={"heldout_fraction": 0.4},
                    validate={"min_rows": {"domain": 1, "sft": 1, "general": 1}})
    run_stage("prepare", tmp_path, p, at(tmp_path, seed))
    where = {**at(tmp_path, seed), "data/sources.yaml": sources, "reports/data/validation.json": tmp_path / "v.json",
             "reports/data/validation.md": tmp_path / "v.md", "reports/audit/log.jsonl": tmp_path / "log.jsonl",
             "reports/data/datasheets": tmp_path / "ds"}
    argv, sheets = (stage_argv(stage, tmp_path, p, where) for stage in ("validate", "datasheets"))
    with pytest.raises(SystemExit, match=rf"no provenance for .*{WEEK}/general/week.jsonl: add an entry"):
        validate.main(argv)  # the drop's file is not declared in sources.yaml
    datasheets.main(sheets)
    sheet = read_json(tmp_path / "ds/general.json")
    (undeclared,) = [s for s in sheet["collection"]["sources"] if s["drop"] == WEEK]
    assert undeclared["license"].startswith("UNDECLARED")
    sources.write_text(sources.read_text() + "- {path: 'drops/*/general/*.jsonl', what: weekly notes, origin: "
                                              "editors, license: CC-BY-4.0, collected: tests, personal_data: emails, "
                                              "notes: one editor's mailbox}\n")
    validate.main(argv)
    report = read_json(tmp_path / "v.json")
    assert report["verdict"] == "pass" and report["provenance"]["undeclared"] == []
    assert "# Data gate: PASS" in (tmp_path / "v.md").read_text()
    datasheets.main(sheets)

    sheet = read_json(tmp_path / "ds/general.json")
    assert set(sheet) >= {"motivation", "composition", "collection", "preprocessing", "uses", "distribution",
                          "maintenance", "hashes"}
    steps = sheet["preprocessing"]["filters"]
    assert [s["step"] for s in steps] == ["parse", "schema", "normalise", "length", "language", "exact_dup",
                                          "near_dup", "pii"]
    assert steps[0]["before"] == 16 and all(a["after"] == b["before"] for a, b in zip(steps, steps[1:]))
    assert steps[-1]["redacted"] == 1 and sheet["preprocessing"]["accounting"] == {
        "in": 16, "kept": 15, "redacted": 1, "quarantined": 0}
    assert sheet["preprocessing"]["pii"]["findings"]["EMAIL_ADDRESS"] == {
        "hits": 1, "records": 1, "redact": 1, "train_hits": 0, "train_records": 0}, "a redacted address is gone"
    assert sheet["distribution"]["licenses"] == ["CC-BY-4.0", "MIT"]
    # corpus-specific prose comes from sources.yaml, not from the code
    assert set(sheet["uses"]["risks"].split("; ")) == {"lorem-style English from a word list", "one editor's mailbox"}
    for s in sheet["collection"]["sources"]:
        assert s["sha256"] == sha256_file(s["file"]) and sheet["hashes"]["inputs"][s["file"]] == s["sha256"]
    for split in ("train", "heldout"):
        assert sheet["hashes"]["outputs"][f"general/{split}.jsonl"] == sha256_file(
            tmp_path / f"prepared/general/{split}.jsonl")
    assert sum(v["records"] for v in sheet["composition"]["splits"].values()) == 16
    assert sheet["composition"]["records_per_drop"] == {"seed": 12, WEEK: 4}
    md = (tmp_path / "ds/general.md").read_text()
    for section in ("## Motivation", "## Composition", "## Collection and provenance", "## Preprocessing",
                    "## Uses", "## Distribution", "## Maintenance", "| near_dup |", "| EMAIL_ADDRESS | 1 | 1 |"):
        assert section in md


def test_a_drop_file_declared_only_by_its_drops_source_yaml_passes_the_gate_with_that_license(tmp_path, seed):
    """data/sources.yaml declares the seed only; the drop's SOURCE.yaml declares its file for the data gate and
    the datasheet, and wins over a sources.yaml entry that matches the file too (listed as shadowed)."""
    drop_file = f"{(tmp_path / 'drops').as_posix()}/{WEEK}/general/week.jsonl"
    write(tmp_path / "drops", {f"{WEEK}/general/week.jsonl": jsonl({"text": t} for t in paragraphs(4, seed=21))})
    held = write_drop_source(tmp_path / "drops" / WEEK, license="CC-BY-SA-4.0", origin="https://example.org/notes",
                             notes="an editor's weekly notes")
    sources = tmp_path / "sources.yaml"
    seed_only = [{"path": "seed/*/*.jsonl", "what": "synthetic seed", "origin": "Faker", "license": "MIT",
                  "collected": "tests", "personal_data": "none", "notes": "lorem-style English from a word list"}]
    sources.write_text(yaml.safe_dump({"sources": seed_only}))
    p = params_file(tmp_path, prepare={"heldout_fraction": 0.4},
                    validate={"min_rows": {"domain": 1, "sft": 1, "general": 1}})
    run_stage("prepare", tmp_path, p, at(tmp_path, seed))
    where = {**at(tmp_path, seed), "data/sources.yaml": sources, "reports/data/validation.json": tmp_path / "v.json",
             "reports/data/validation.md": tmp_path / "v.md", "reports/audit/log.jsonl": tmp_path / "log.jsonl",
             "reports/data/datasheets": tmp_path / "ds"}
    argv, sheets = (stage_argv(stage, tmp_path, p, where) for stage in ("validate", "datasheets"))

    validate.main(argv)
    prov = read_json(tmp_path / "v.json")["provenance"]
    assert prov["undeclared"] == [] and prov["shadowed"] == [] and prov["declared_in"][drop_file] == held.as_posix()
    assert prov["drops"] == {WEEK: {"path": held.as_posix(), "sha256": sha256_file(held), "license": "CC-BY-SA-4.0"}}
    datasheets.main(sheets)
    sheet = read_json(tmp_path / "ds/general.json")
    (from_drop,) = [s for s in sheet["collection"]["sources"] if s["drop"] == WEEK]
    assert {k: from_drop[k] for k in ("license", "origin", "collected", "notes", "declared_in")} == {
        "license": "CC-BY-SA-4.0", "origin": "https://example.org/notes", "collected": "not stated",
        "notes": "an editor's weekly notes", "declared_in": held.as_posix()}
    assert sheet["distribution"]["licenses"] == ["CC-BY-SA-4.0", "MIT"]
    assert "| CC-BY-SA-4.0 |" in (tmp_path / "ds/general.md").read_text()

    # a sources.yaml glob that also matches the drop's file: the drop's own SOURCE.yaml wins, the gate says so
    sources.write_text(yaml.safe_dump({"sources": seed_only + [{**seed_only[0], "path": "drops/*/general/*.jsonl"}]}))
    validate.main(argv)
    assert read_json(tmp_path / "v.json")["provenance"]["shadowed"] == [drop_file]
    datasheets.main(sheets)
    assert read_json(tmp_path / "ds/general.json")["distribution"]["licenses"] == ["CC-BY-SA-4.0", "MIT"]

    # a SOURCE.yaml edited by hand into saying nothing fails the gate, naming the key
    write_drop_source(tmp_path / "drops" / WEEK, license="TODO")
    with pytest.raises(SystemExit, match=r"SOURCE.yaml: `license`: 'TODO' says nothing"):
        validate.main(argv)


def test_sources_yaml_declares_every_seed_file_as_sources_md_does():
    table = {m[0]: m[1:] for m in re.findall(r"^\| `([^`]+)` \| (\w+) \| ([^|]+?) \| ([^|]+?) \|",
                                              (ROOT / "data/SOURCES.md").read_text(), re.M)}
    declared = {s["path"]: s for s in yaml.safe_load((ROOT / "data/sources.yaml").read_text())["sources"]}
    seed_files = {p.relative_to(ROOT).as_posix() for p in (ROOT / "data/seed").glob("*/*.jsonl")}
    assert set(table) == set(declared) == seed_files
    for path, (role, what, license_) in table.items():
        assert (declared[path]["role"], declared[path]["what"]) == (role, what), path
        assert declared[path]["license"].split()[0] == license_.split()[0], path
