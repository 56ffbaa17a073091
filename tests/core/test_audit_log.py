import json
import multiprocessing

from ratchet.core import audit_log


def test_chain_verifies_and_detects_edits_removals_and_reordering(tmp_path):
    log = tmp_path / "log.jsonl"
    for i in range(4):
        audit_log.append(log, "gate", model=f"m{i}", verdict="pass")
    assert audit_log.verify(log) == []
    lines = log.read_text().splitlines()

    edited = json.loads(lines[1]); edited["verdict"] = "fail"
    log.write_text("\n".join([lines[0], json.dumps(edited), *lines[2:]]) + "\n")
    assert any("entry 1" in p and "altered" in p for p in audit_log.verify(log))

    log.write_text("\n".join([lines[0], *lines[2:]]) + "\n")
    assert any("entry 1" in p for p in audit_log.verify(log))

    log.write_text("\n".join([lines[1], lines[0], *lines[2:]]) + "\n")
    assert audit_log.verify(log)


def _append_many(log, writer: int, n: int) -> None:
    for i in range(n):
        audit_log.append(log, "gate", writer=writer, i=i)


def test_concurrent_appends_take_turns_and_the_chain_verifies(tmp_path):
    """Four processes append 25 entries each at once: every entry is there once, in one unbroken chain."""
    log = tmp_path / "log.jsonl"
    procs = [multiprocessing.get_context("fork").Process(target=_append_many, args=(log, w, 25)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        assert p.exitcode == 0
    logged = audit_log.entries(log)
    assert sorted((e["writer"], e["i"]) for e in logged) == [(w, i) for w in range(4) for i in range(25)]
    assert audit_log.verify(log) == []


def test_new_entries_chain_onto_the_last(tmp_path):
    log = tmp_path / "log.jsonl"
    a = audit_log.append(log, "data_gate", verdict="pass")
    b = audit_log.append(log, "gate", verdict="fail", reason="x")
    assert b["prev"] == a["hash"] and a["prev"] == audit_log.GENESIS and b["seq"] == 1


def test_ratchet_audit_verify_exits_nonzero_on_tampering(tmp_path, capsys):
    from ratchet.cli import main

    log = tmp_path / "log.jsonl"
    audit_log.append(log, "gate", verdict="fail")
    audit_log.append(log, "gate", verdict="pass")
    assert main(["audit", "verify", "--log", str(log)]) == 0
    log.write_text(log.read_text().replace('"fail"', '"pass"', 1))
    assert main(["audit", "verify", "--log", str(log)]) == 1
    assert "altered" in capsys.readouterr().err


def test_a_swap_cut_short_is_restored_and_a_half_built_champion_removed(tmp_path):
    from ratchet.eval.promote import recover, swap

    champion = tmp_path / "champion"
    champion.mkdir()
    (champion / "champion.json").write_text('{"cycle": 1}')
    new = tmp_path / ".champion.new-1"
    new.mkdir()
    (new / "champion.json").write_text('{"cycle": 2}')
    champion.rename(tmp_path / ".champion.old-1")  # killed between the two renames of a swap
    notes = recover(champion)
    assert (champion / "champion.json").read_text() == '{"cycle": 1}' and len(notes) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["champion"]
    built = tmp_path / ".champion.new-2"
    built.mkdir()
    (built / "champion.json").write_text('{"cycle": 2}')
    swap(champion, built)
    assert (champion / "champion.json").read_text() == '{"cycle": 2}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["champion"]


def test_a_full_disk_during_an_append_leaves_the_log_as_it_was(tmp_path, monkeypatch):
    import errno
    import os

    log = tmp_path / "log.jsonl"
    audit_log.append(log, "gate", verdict="pass")
    before = log.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device", str(log))

    with monkeypatch.context() as m:
        m.setattr(audit_log.os, "fsync", full)
        try:
            audit_log.append(log, "gate", verdict="fail")
            raise AssertionError("the append should have failed")
        except OSError as e:
            assert e.errno == errno.ENOSPC
    assert log.read_bytes() == before, "no half-written entry is left"
    audit_log.append(log, "gate", verdict="fail")
    assert audit_log.verify(log) == [] and len(audit_log.entries(log)) == 2
    assert os.path.getsize(log) > len(before)


def test_a_stage_that_fills_the_disk_exits_with_a_clear_message_and_the_previous_output_intact(tmp_path,
                                                                                              monkeypatch):
    import errno
    import types

    import pytest

    import stages.__main__ as launcher
    from ratchet.core.io import atomic_dir

    out = tmp_path / "model"
    out.mkdir()
    (out / "weights").write_text("the previous model")

    def main(argv):
        with atomic_dir(out) as tmp:
            (tmp / "weights").write_text("half of the new")
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp / "weights"))

    monkeypatch.setattr(launcher.importlib, "import_module", lambda name: types.SimpleNamespace(main=main))
    monkeypatch.setattr(launcher.runtime, "start", lambda: None)
    with pytest.raises(SystemExit, match="disk is full .*Nothing was half-written"):
        launcher.launch(["dapt"])
    assert (out / "weights").read_text() == "the previous model"
    assert [p.name for p in tmp_path.iterdir()] == ["model"], "the scratch folder is gone"


def test_an_append_cut_short_is_reported_then_removed_by_the_next_append(tmp_path):
    """A kill mid-write leaves a last line without its newline: verify names it, the next append cuts it off
    (it was never acknowledged) and chains onto the last whole entry."""
    log = tmp_path / "log.jsonl"
    audit_log.append(log, "first")
    with open(log, "a", encoding="utf-8") as f:
        f.write('{"seq": 1, "event": "cut sh')
    assert [e["event"] for e in audit_log.entries(log)] == ["first"]
    assert audit_log.verify(log) == [f"{log}: the last line is unfinished: an append cut short by a crash (the "
                                     "next append removes it) or the file was cut"]
    audit_log.append(log, "second")
    assert [e["event"] for e in audit_log.entries(log)] == ["first", "second"] and audit_log.verify(log) == []


def test_what_a_killed_writer_left_beside_a_folder_is_cleared_and_a_moved_aside_folder_restored(tmp_path):
    """Killed between moving the previous folder aside and renaming the new one in: the previous one comes
    back; the scratch copy is removed. Leftovers of a running process are not touched."""
    import os
    import subprocess

    from ratchet.core.io import clear_leftovers

    dead = subprocess.Popen(["true"])  # a process that has ended: its pid is free
    dead.wait()
    out = tmp_path / "model"
    for kind in ("old", "tmp"):
        (tmp_path / f".model.{kind}-{dead.pid}").mkdir()
        (tmp_path / f".model.{kind}-{dead.pid}" / "weights").write_text(kind)
    (tmp_path / f".model.tmp-{os.getpid()}").mkdir()  # a live writer's scratch
    notes = clear_leftovers(out)
    assert (out / "weights").read_text() == "old" and len(notes) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".model.tmp-{os.getpid()}", "model"]


def test_a_cut_tail_or_a_rebuilt_log_disagrees_with_the_head_a_git_tag_recorded(tmp_path, capsys):
    import subprocess

    from ratchet.cli import main

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    git("-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit", "-q", "--allow-empty", "-m", "init")
    log = tmp_path / "log.jsonl"
    for i in range(3):
        head = audit_log.append(log, "gate", verdict="pass", i=i)
    git("-c", "user.name=t", "-c", "user.email=t@t.invalid", "tag", "-a", "champion-1", "-m",
        f"Promote\n\naudit entry {head['seq']}: {head['hash']}")
    assert main(["audit", "verify", "--log", str(log)]) == 0
    assert "agrees with the head recorded in 1 git tags" in capsys.readouterr().out

    full = log.read_text()
    log.write_text("".join(full.splitlines(keepends=True)[:2]))  # the chain of what is left is intact
    assert audit_log.verify(log) == []
    assert main(["audit", "verify", "--log", str(log)]) == 1
    err = capsys.readouterr().err
    assert "champion-1 records entry 2" in err and "its tail was cut off" in err

    log.unlink()  # rebuilt from scratch: a consistent chain of other entries
    for i in range(3):
        audit_log.append(log, "gate", verdict="pass", i=i + 10)
    assert main(["audit", "verify", "--log", str(log)]) == 1
    assert "the log was rewritten" in capsys.readouterr().err
