"""DVC remotes from the repo's .dvc/config: the default local directory, and S3 against moto on loopback."""
from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from .conftest import ROOT, run

TRACKED = ("data/small", "models/fake")


def dvc_repo(tmp_path: Path) -> Path:
    """A fresh git + DVC repo with this repo's .dvc/config, a small data folder and a fake model folder."""
    repo = tmp_path / "repo"
    repo.mkdir()
    run("git init -q && dvc init -q", repo)
    shutil.copy2(ROOT / ".dvc/config", repo / ".dvc/config")
    (repo / "data/small").mkdir(parents=True)
    (repo / "data/small/records.jsonl").write_text('{"text": "a small record"}\n{"text": "another one"}\n')
    (repo / "data/small/notes.txt").write_text("caf\u00e9 na\u00efve\n\nsecond block\n", encoding="utf-8")
    (repo / "models/fake").mkdir(parents=True)
    (repo / "models/fake/config.json").write_text('{"model_type": "llama", "hidden_size": 32}\n')
    (repo / "models/fake/model.safetensors").write_bytes(bytes(range(256)) * 256)
    run(["dvc", "add", *TRACKED], repo)
    return repo


def snapshot(repo: Path) -> dict[str, bytes]:
    return {p.relative_to(repo).as_posix(): p.read_bytes()
            for t in TRACKED for p in sorted((repo / t).rglob("*")) if p.is_file()}


def wipe_local_copies(repo: Path) -> None:
    """Forget the data on this machine: the cache and the workspace copies; only the .dvc files stay."""
    shutil.rmtree(repo / ".dvc/cache")
    for t in TRACKED:
        shutil.rmtree(repo / t)


def test_default_remote_is_a_local_folder_next_to_the_clone_and_round_trips(tmp_path, monkeypatch):
    repo = dvc_repo(tmp_path)
    storage = tmp_path / "ratchet-dvc-storage"  # the clone's sibling: no set-up, outside the work tree
    monkeypatch.setenv("COLUMNS", "1000")  # dvc wraps its table, even inside a path, to the terminal width
    remotes = " ".join(run(["dvc", "remote", "list"], repo).stdout.split())
    assert f"local {storage} (default)" in remotes
    before = snapshot(repo)

    run(["dvc", "push"], repo)
    assert any(p.is_file() for p in storage.rglob("*")), "dvc push wrote nothing to the default remote"
    wipe_local_copies(repo)
    run(["dvc", "pull"], repo)
    assert snapshot(repo) == before


@pytest.fixture
def s3_endpoint(monkeypatch):
    """moto's S3 on a free loopback port, with dummy credentials that subprocesses inherit."""
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "NO_PROXY": "127.0.0.1"}.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def test_s3_remote_round_trips_through_moto(tmp_path, s3_endpoint):
    import boto3

    repo = dvc_repo(tmp_path)
    url = run(["dvc", "config", "remote.s3.url"], repo).stdout.strip()
    bucket, prefix = url.removeprefix("s3://").split("/", 1)
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket=bucket)
    # what the README tells users to do: the endpoint stays in the untracked .dvc/config.local
    run(["dvc", "remote", "modify", "--local", "s3", "endpointurl", s3_endpoint], repo)
    before = snapshot(repo)

    run(["dvc", "push", "-r", "s3"], repo)
    assert s3.list_objects_v2(Bucket=bucket, Prefix=prefix + "/")["KeyCount"] > 0
    wipe_local_copies(repo)
    run(["dvc", "pull", "-r", "s3"], repo)
    assert snapshot(repo) == before
