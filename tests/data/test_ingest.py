"""`ratchet ingest`: a weekly drop lands in data/drops/<week>/<role>/, tracked by DVC, logged, never twice."""
from __future__ import annotations

import datetime
import json

import pytest
import yaml

from ratchet.core import audit_log, pipeline
from ratchet.core.io import read_json, sha256_file
from ratchet.data import ingest as drops

from ..conftest import DROP_SOURCE, copy_repo, run, write_drop_source

WEEK = "2026-W48"
LOG = "reports/audit/log.jsonl"
# every record is longer than prepare.min_chars, so prepare keeps it
TEXT = [{"text": f"Domain note {i}: the ingest command copies weekly drops into the repository."} for i in range(3)]
PAIRS = [{"prompt": f"What does ratchet ingest do, case {i}?",
          "response": "It checks the files, copies them under data/drops and tracks them with DVC."} for i in range(2)]
CHAT = [{"messages": [{"role": "user", "content": "How is a re-ingested file handled by ratchet?"},
                      {"role": "assistant", "content": "It is recognised by its sha256 and skipped."}]}]
GENERAL = "A general paragraph the model must not forget, long enough to keep.\n\nAnd a second block of plain text.\n"


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def ingest(repo, *args, check=True):
    return run(["python", "-m", "ratchet.cli", "ingest", *map(str, args)], repo, check=check)


def drop_files(repo) -> set[str]:
    """<week>/<role>/<file> of every file in the drops."""
    return {p.relative_to(repo / "data/drops").as_posix() for p in (repo / "data/drops").glob("*/*/*")}


@pytest.fixture
def repo(tmp_path):
    return copy_repo(tmp_path / "repo")


@pytest.fixture
def inputs(tmp_path):
    """A flat folder holding every accepted schema: raw-text JSONL, .txt, prompt/response and chat JSONL."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "notes.jsonl").write_text(jsonl(TEXT))
    (folder / "general.txt").write_text(GENERAL)
    (folder / "pairs.jsonl").write_text(jsonl(PAIRS))
    (folder / "chat.jsonl").write_text(jsonl(CHAT))
    write_drop_source(folder)
    return folder


def test_each_schema_lands_in_its_role_folder_tracked_and_logged(repo, inputs):
    out = ingest(repo, inputs / "notes.jsonl", "--role", "domain", "--week", WEEK).stdout
    assert f"data/drops/{WEEK}/domain/notes.jsonl" in out and "records=3" in out
    (inputs / "notes.jsonl").unlink()
    # a flat folder: --role is the role of its raw text, instruction records are sft by their schema
    out = ingest(repo, inputs, "--role", "general", "--week", WEEK).stdout

    assert drop_files(repo) == {f"{WEEK}/domain/notes.jsonl", f"{WEEK}/general/general.txt",
                                f"{WEEK}/sft/pairs.jsonl", f"{WEEK}/sft/chat.jsonl"}
    assert f"git add data/drops/{WEEK}.dvc data/drops/.gitignore {LOG}" in out
    dvc_file = yaml.safe_load((repo / f"data/drops/{WEEK}.dvc").read_text())
    assert dvc_file["outs"][0]["path"] == WEEK and dvc_file["outs"][0]["md5"].endswith(".dir")
    assert f"/{WEEK}" in (repo / "data/drops/.gitignore").read_text().split()

    log = audit_log.entries(repo / LOG)
    assert [(e["event"], e["week"]) for e in log] == [("data_drop", WEEK)] * 2
    files = {f["path"]: f for f in log[1]["files"]}
    assert {p: (f["role"], f["records"]) for p, f in files.items()} == {
        f"data/drops/{WEEK}/general/general.txt": ("general", 2),
        f"data/drops/{WEEK}/sft/pairs.jsonl": ("sft", 2),
        f"data/drops/{WEEK}/sft/chat.jsonl": ("sft", 1)}
    assert all(f["sha256"] == sha256_file(repo / p) for p, f in files.items())
    assert audit_log.verify(repo / LOG) == []
    assert "2 entries, hash chain intact" in run(["python", "-m", "ratchet.cli", "audit", "verify"], repo).stdout


def test_ingests_at_once_take_turns_and_the_same_file_lands_once(repo, inputs):
    """Three `ratchet ingest` processes started together: two bring the same file (as two weeks), one
    another file. The same content lands once (the later ingest sees it and skips it), every drop is
    tracked and logged once, and the chain verifies. While another writer holds the drops' lock, none of
    them copies anything."""
    import subprocess
    import time

    from ratchet.core.io import locked

    from ..conftest import env

    jobs = [("notes.jsonl", "domain", WEEK), ("notes.jsonl", "domain", "2026-W49"), ("general.txt", "general", WEEK)]
    with locked(repo / "data/drops"):
        procs = [subprocess.Popen(["python", "-m", "ratchet.cli", "ingest", str(inputs / name), "--role", role,
                                   "--week", week], cwd=repo, env=env(), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for name, role, week in jobs]
        time.sleep(3)
        assert all(p.poll() is None for p in procs) and not drop_files(repo), "an ingest ran past the lock"
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        outs.append(out)
    landed = {f for f in drop_files(repo) if f.endswith("notes.jsonl")}
    assert len(landed) == 1 and sum("nothing to do" in out for out in outs[:2]) == 1
    log = audit_log.entries(repo / LOG)
    assert sorted(f["path"] for e in log for f in e["files"]) == sorted(
        [f"data/drops/{landed.pop()}", f"data/drops/{WEEK}/general/general.txt"])
    assert audit_log.verify(repo / LOG) == []


def test_a_windows_export_is_accepted(repo, tmp_path):
    """A UTF-8 byte order mark and CRLF line ends, as spreadsheet and Windows tools write them."""
    path = tmp_path / "export.jsonl"
    write_drop_source(tmp_path)
    path.write_bytes(("\ufeff" + "".join(json.dumps(r) + "\r\n" for r in PAIRS)).encode("utf-8"))
    out = ingest(repo, path, "--week", WEEK).stdout
    assert f"data/drops/{WEEK}/sft/export.jsonl  role=sft  records=2" in out


def test_a_folder_laid_out_by_role_needs_no_role_flag(repo, tmp_path):
    drop = tmp_path / "drop"
    for role, name, text in [("domain", "ref.txt", GENERAL), ("sft", "qa.jsonl", jsonl(PAIRS)),
                             ("general", "news.jsonl", jsonl(TEXT))]:
        (drop / role).mkdir(parents=True)
        (drop / role / name).write_text(text)
    write_drop_source(drop)
    ingest(repo, drop, "--week", WEEK)
    assert drop_files(repo) == {f"{WEEK}/domain/ref.txt", f"{WEEK}/sft/qa.jsonl", f"{WEEK}/general/news.jsonl"}

    refused = ingest(repo, drop, "--role", "domain", "--week", "2026-W49", check=False)
    assert refused.returncode == 2 and "drop --role" in refused.stderr


def test_reingesting_the_same_content_is_a_no_op_and_only_new_files_are_added(repo, inputs):
    ingest(repo, inputs / "pairs.jsonl", "--week", WEEK)
    before = (drop_files(repo), (repo / LOG).read_text(), (repo / f"data/drops/{WEEK}.dvc").read_text())

    again = ingest(repo, inputs / "pairs.jsonl", "--week", "2026-W49")  # another week: still the same bytes
    assert again.returncode == 0 and "nothing to do" in again.stdout
    assert f"same content as data/drops/{WEEK}/sft/pairs.jsonl" in again.stdout
    assert (drop_files(repo), (repo / LOG).read_text(), (repo / f"data/drops/{WEEK}.dvc").read_text()) == before
    assert not (repo / "data/drops/2026-W49").exists() and not (repo / "data/drops/2026-W49.dvc").exists()

    (inputs / "notes.jsonl").unlink()
    out = ingest(repo, inputs, "--role", "general", "--week", "2026-W49").stdout
    assert f"skipped {inputs / 'pairs.jsonl'}" in out
    assert drop_files(repo) - before[0] == {"2026-W49/general/general.txt", "2026-W49/sft/chat.jsonl"}
    last = audit_log.entries(repo / LOG)[-1]
    assert [s["source"] for s in last["skipped"]] == [str(inputs / "pairs.jsonl")]


BAD = {
    "unsupported extension": ("data.csv", b"text\nhello\n", [], ["data.csv", "unsupported file type '.csv'"]),
    "binary file": ("blob.jsonl", b'{"text": "x"}\n\x00\x01\x02', ["--role", "domain"],
                    ["blob.jsonl", "line 2", "binary"]),
    "non-UTF-8 bytes": ("latin.txt", "ok\n\ncaf\u00e9\n".encode("latin-1"), ["--role", "domain"],
                        ["latin.txt", "line 3", "UTF-8"]),
    "malformed JSON line": ("broken.jsonl", b'{"text": "fine"}\n{"text": oops}\n', ["--role", "domain"],
                            ["broken.jsonl", "line 2", "not valid JSON"]),
    "empty file": ("empty.jsonl", b"", ["--role", "domain"], ["empty.jsonl", "empty file"]),
    "UTF-16 export": ("utf16.jsonl", jsonl(TEXT).encode("utf-16"), ["--role", "domain"],
                      ["utf16.jsonl", "UTF-16", "save it as UTF-8"]),
    "mixed record kinds": ("mixed.jsonl", (jsonl(TEXT[:1]) + jsonl(PAIRS[:1])).encode(), ["--role", "domain"],
                           ["mixed.jsonl", "line 2", "separate files"]),
    "not a record": ("other.jsonl", b'{"title": "no text field"}\n', ["--role", "domain"],
                     ["other.jsonl", "line 1", "not a record"]),
    "raw text without --role": ("raw.jsonl", jsonl(TEXT).encode(), [], ["raw.jsonl", "--role domain"]),
}


@pytest.fixture(scope="module")
def shared_repo(tmp_path_factory):
    """One repo for the refusals: each one must leave it untouched."""
    return copy_repo(tmp_path_factory.mktemp("repo"))


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_a_bad_input_exits_2_names_the_file_and_line_and_copies_nothing(shared_repo, tmp_path, case):
    name, data, args, expected = BAD[case]
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.jsonl").write_text(jsonl(PAIRS))  # a good file beside it is not copied either
    write_drop_source(folder)
    (folder / name).write_bytes(data)

    for target in (folder / name, folder):
        r = ingest(shared_repo, target, *args, "--week", WEEK, check=False)
        assert r.returncode == 2, r.stdout + r.stderr
        assert "Traceback" not in r.stderr and "nothing was copied" in r.stderr
        for text in expected:
            assert text in r.stderr
    assert drop_files(shared_repo) == set() and not (shared_repo / LOG).exists()


def test_a_drop_without_its_source_yaml_is_refused_with_the_file_to_write(shared_repo, inputs, tmp_path):
    """A folder, a role-laid folder and a single file without SOURCE.yaml: exit 2, nothing copied, and the
    message names where to put it and every key it needs; a SOURCE.yaml inside a role folder is misplaced."""
    (inputs / "SOURCE.yaml").unlink()
    laid = tmp_path / "laid"
    (laid / "sft").mkdir(parents=True)
    (laid / "sft" / "qa.jsonl").write_text(jsonl(PAIRS))
    for target, args in ((inputs, ["--role", "general"]), (laid, []), (inputs / "pairs.jsonl", [])):
        r = ingest(shared_repo, target, *args, "--week", WEEK, check=False)
        folder = target if target.is_dir() else target.parent
        assert r.returncode == 2 and "Traceback" not in r.stderr and "nothing was copied" in r.stderr, r.stderr
        assert f"{folder / 'SOURCE.yaml'}: missing" in r.stderr and "data/drops/README.md" in r.stderr
        for key in ("what:", "origin:", "license:", "personal_data:"):
            assert key in r.stderr
    write_drop_source(laid / "sft")
    r = ingest(shared_repo, laid, "--week", WEEK, check=False)
    assert r.returncode == 2 and f"goes in {laid}, next to the role folders" in r.stderr
    assert drop_files(shared_repo) == set() and not (shared_repo / LOG).exists()


BAD_SOURCE = {
    "a key missing": ({"personal_data": None}, ["`personal_data` missing", "add `personal_data: <`none`"]),
    "an unknown key": ({"licence": "MIT"}, ["`licence`: unknown key", "what, origin, license, personal_data"]),
    "a placeholder": ({"license": "TODO"}, ["`license`: 'TODO' says nothing", "SPDX"]),
    "no license": ({"license": "none"}, ["`license`: 'none': without a license"]),
    "YAML's no": ({"personal_data": False}, ["`personal_data`: expected text, got bool False", "quote it"]),
}


@pytest.mark.parametrize("case", BAD_SOURCE, ids=list(BAD_SOURCE))
def test_a_source_yaml_that_says_too_little_is_refused_naming_the_key(shared_repo, inputs, case):
    fields, expected = BAD_SOURCE[case]
    write_drop_source(inputs, **fields)
    r = ingest(shared_repo, inputs, "--role", "general", "--week", WEEK, check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "nothing was copied" in r.stderr, r.stderr
    assert f"{inputs / 'SOURCE.yaml'}: " in r.stderr
    for text in expected:
        assert text in r.stderr
    assert drop_files(shared_repo) == set() and not (shared_repo / LOG).exists()


def test_the_source_yaml_is_tracked_with_the_drop_and_recorded_in_its_audit_entry(repo, inputs):
    write_drop_source(inputs, license="CC-BY-4.0", collected=datetime.date(2026, 11, 23))
    out = ingest(repo, inputs / "notes.jsonl", "--role", "domain", "--week", WEEK).stdout
    held = repo / f"data/drops/{WEEK}/SOURCE.yaml"
    assert held.read_bytes() == (inputs / "SOURCE.yaml").read_bytes()
    assert f"provenance data/drops/{WEEK}/SOURCE.yaml: license=CC-BY-4.0" in out
    assert yaml.safe_load((repo / f"data/drops/{WEEK}.dvc").read_text())["outs"][0]["nfiles"] == 2
    (entry,) = audit_log.entries(repo / LOG)
    assert entry["provenance"] == {"path": f"data/drops/{WEEK}/SOURCE.yaml", "sha256": sha256_file(held),
                                   **DROP_SOURCE, "license": "CC-BY-4.0", "collected": "2026-11-23"}

    # the same week again: the same fields join it (the week's SOURCE.yaml stays), other ones are refused
    ingest(repo, inputs / "chat.jsonl", "--week", WEEK)
    assert audit_log.entries(repo / LOG)[-1]["provenance"] == entry["provenance"]
    write_drop_source(inputs, license="MIT")
    r = ingest(repo, inputs / "pairs.jsonl", "--week", WEEK, check=False)
    assert r.returncode == 2 and "nothing was copied" in r.stderr and "differs in license" in r.stderr, r.stderr
    assert drop_files(repo) == {f"{WEEK}/domain/notes.jsonl", f"{WEEK}/sft/chat.jsonl"}
    assert len(audit_log.entries(repo / LOG)) == 2 and audit_log.verify(repo / LOG) == []


def test_a_later_drop_does_not_declare_a_week_ingested_without_provenance(tmp_path):
    """Files ingested before drops carried a SOURCE.yaml are declared in data/sources.yaml; a new drop's
    SOURCE.yaml would silently declare them too, so it may join their week only once the week has its own."""
    week = tmp_path / WEEK
    (week / "domain").mkdir(parents=True)
    (week / "domain" / "old.jsonl").write_text(jsonl(TEXT))
    assert "holds files ingested without a SOURCE.yaml" in drops.week_conflict(week, DROP_SOURCE)
    write_drop_source(week)
    assert drops.week_conflict(week, DROP_SOURCE) is None
    assert "differs in license" in drops.week_conflict(week, {**DROP_SOURCE, "license": "MIT"})


@pytest.mark.integration  # prepares the whole seed (a minute of PII scanning)
def test_prepare_picks_up_the_ingested_records(repo, inputs):
    ingest(repo, inputs / "notes.jsonl", "--role", "domain", "--week", WEEK)
    ingest(repo, inputs / "chat.jsonl", "--week", WEEK)
    run(pipeline.stages(repo)["prepare"].argv, repo)  # as dvc.yaml runs it
    manifest = read_json(repo / "data/prepared/manifest.json")["files"]
    assert manifest[f"data/drops/{WEEK}/domain/notes.jsonl"] == {"source": WEEK, "role": "domain", "in": 3, "kept": 3}
    assert manifest[f"data/drops/{WEEK}/sft/chat.jsonl"] == {"source": WEEK, "role": "sft", "in": 1, "kept": 1}
    prepared = "".join((repo / "data/prepared" / role / f"{split}.jsonl").read_text()
                       for role in ("domain", "sft") for split in ("train", "heldout"))
    assert all(r["text"] in prepared for r in TEXT) and CHAT[0]["messages"][1]["content"] in prepared


def test_the_default_week_is_the_current_iso_week_and_bad_weeks_are_refused():
    assert drops.current_week(datetime.date(2026, 11, 24)) == "2026-W48"
    assert drops.current_week(datetime.date(2021, 1, 1)) == "2020-W53"
    assert drops.check_week("2026-W53") == "2026-W53"
    for bad in ("2026-48", "2026-W7", "2025-W53", "2026-W00"):
        with pytest.raises(drops.IngestError, match="YYYY-Www"):
            drops.check_week(bad)


def test_a_full_disk_during_the_copy_leaves_nothing_behind_and_says_so(repo, inputs, monkeypatch, capsys):
    """The second file's copy runs out of space half-way: no file lands, no scratch copy is left, the audit log
    is untouched, and `ratchet ingest` says the disk is full and exits 1."""
    import errno
    import os
    import shutil

    from ratchet.cli import main

    real_copy, copies = shutil.copyfile, []

    def copy_then_fill_the_disk(src, dst, *a, **k):
        copies.append(dst)
        if len(copies) == 2:
            with open(dst, "wb") as f:
                f.write(open(src, "rb").read()[:10])
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real_copy(src, dst, *a, **k)

    before = {p for p in (repo / "data/drops").rglob("*")}
    monkeypatch.setattr(drops.shutil, "copyfile", copy_then_fill_the_disk)
    monkeypatch.chdir(repo)
    assert main(["ingest", str(inputs), "--role", "domain", "--week", WEEK]) == 1
    assert "the disk is full" in capsys.readouterr().err
    assert len(copies) == 2
    left = [p for p in (repo / "data/drops").rglob("*") if p.is_file() and p not in before]
    assert left == [], left
    assert not (repo / LOG).exists() or audit_log.entries(repo / LOG) == []
    assert not os.path.exists(repo / f"data/drops/{WEEK}.dvc")


def test_an_ingest_cut_short_after_its_copy_is_finished_by_the_next_one(repo, inputs, monkeypatch, capsys):
    """The disk fills at the audit entry, after the copy and `dvc add`: ingest says the drop is pending and
    exits 1; the next ingest (of anything) tracks and logs it, once, and its own files after it."""
    import errno

    from ratchet.cli import main

    real_append = audit_log.append

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(repo / LOG))

    monkeypatch.chdir(repo)
    with monkeypatch.context() as m:
        m.setattr(drops.audit_log, "append", full)
        assert main(["ingest", str(inputs / "notes.jsonl"), "--role", "domain", "--week", WEEK]) == 1
    err = capsys.readouterr().err
    assert "the disk is full" in err and f"data/drops/{drops.PENDING}" in err and "finishes it" in err
    assert (repo / "data/drops" / drops.PENDING).is_file() and audit_log.entries(repo / LOG) == []
    assert drop_files(repo) == {f"{WEEK}/domain/notes.jsonl"}

    assert drops.audit_log.append is real_append
    assert main(["ingest", str(inputs / "general.txt"), "--role", "general", "--week", "2026-W49"]) == 0
    out = capsys.readouterr().out
    assert f"finished the ingest of week {WEEK}" in out
    assert not (repo / "data/drops" / drops.PENDING).exists()
    log = audit_log.entries(repo / LOG)
    assert [(e["event"], e["week"]) for e in log] == [("data_drop", WEEK), ("data_drop", "2026-W49")]
    assert [f["path"] for f in log[0]["files"]] == [f"data/drops/{WEEK}/domain/notes.jsonl"]
    assert (repo / f"data/drops/{WEEK}.dvc").is_file() and audit_log.verify(repo / LOG) == []
