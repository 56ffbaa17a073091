"""Promotion: the champion moves only after a run whose every gate passed, on real results that match dvc.lock.

    ratchet promote [--params params.yaml] [--no-commit]

A candidate is the run in the workspace: the data gate and the verdicts of
every gated model (dapt, sft, student, onnx). It is promoted only when nothing
is stale against dvc.lock (`dvc status` is clean), the data gate and every gate
passed, the audit stage found every artifact's lineage intact, and the results
are real (a tiny-profile run is refused unless promote.accept_test_models).

Promotion builds the new champion aside (the tuned teacher, dapt + sft merged;
a copy of the shipped int8 model; the verdicts; champion.json; a model card),
swaps it in with renames, tracks it with `dvc add models/champion`, appends a
`promotion` entry to the audit log (hashes of the models, the verdicts and the
drops) and commits. The commit is registered in GTO, the model registry DVC
reads: version `v<n>.0.0` of the artifact dvc.yaml declares at models/champion
(the annotated tag `champion@v<n>.0.0`, whose message holds the audit log's head
hash, which `ratchet audit verify` checks), assigned the stage `prod`
(`champion#prod#<n>`); `gto show` lists the champions. A refusal (a failed
gate, or anything else in the way) names every failing or stale gate, appends a
`refusal` entry, and leaves the champion byte for byte; it stays out of the
registry: its commit is tagged `<tag_prefix>-refused-<n>`, to anchor the audit
log all the same. A hold (a gate that could not decide: a rule whose interval
spans its limit, and nothing failed) is not a refusal of the model but moves
nothing either: a `hold` entry names each undecided rule and about how many
more evaluation documents would resolve it, and the commit is tagged
`<tag_prefix>-held-<n>`.

Each step can be repeated: a run killed anywhere is finished by the next one
(`recover`), and a candidate already promoted is not promoted twice.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ratchet.core import audit_log, params, pipeline, vcs
from ratchet.core.io import read_json, sha256_file, sha256_tree, write_json, write_text
from ratchet.models import champion as champ
from ratchet.models.lineage import artifact_hash, write_lineage

# (champion record, base model's source, training input files, shipped model folder) -> the champion's README.md
Card = Callable[[dict, dict, list[str], Path], str]

REFUSED, PROMOTED, HELD = 3, 0, 5
EVENTS = {"promotion": PROMOTED, "refusal": REFUSED, "hold": HELD}  # the outcome of a run, and its exit code
STAGE = "prod"  # the GTO stage every promoted champion is assigned: the model `ratchet update` ships
# What a promotion or a weekly update commits; the champion itself is in DVC (models/champion.dvc), its
# placeholder left git at the first promotion (track stages that removal).
COMMITTED = ["data/drops", "dvc.lock", "reports", "models/champion.dvc", "models/.gitignore"]


@dataclass(frozen=True)
class Layout:
    """Where the run's artifacts are: read from dvc.yaml, the one place paths are wired."""

    champion: Path
    base: Path
    dapt: Path
    sft: Path
    onnx: Path
    verdicts: dict[str, Path]  # every gated model, plus the champion and shipped references
    data_gate: Path
    summary: Path
    manifest: Path
    replay: Path
    audit_log: Path
    annex: tuple[Path, ...]  # the audit stage's Annex IV documentation (Markdown, HTML)
    report: Path | None = None  # the audit stage's HTML run report, and what it draws from
    curves: tuple[Path, ...] = ()
    quantize: Path | None = None
    artifact: str | None = None  # the champion's name in the GTO registry: its entry in dvc.yaml's `artifacts:`


def layout(root: Path) -> Layout:
    by_recipe: dict[str, list[pipeline.Stage]] = {}
    for stage in pipeline.stages(root).values():
        by_recipe.setdefault(stage.recipe, []).append(stage)
    gates = {s.arg("--model"): s for s in by_recipe["gate"]}
    dapt, = by_recipe["dapt"]
    audit, = by_recipe["audit"]
    return Layout(
        champion=root / dapt.arg("--champion"), base=root / dapt.arg("--base"), dapt=root / dapt.arg("--out"),
        sft=root / by_recipe["sft"][0].arg("--out"), onnx=root / by_recipe["quantize"][0].arg("--out"),
        verdicts={m: root / s.arg("--verdict") for m, s in gates.items()},
        data_gate=root / by_recipe["validate"][0].arg("--out"), summary=root / audit.arg("--out"),
        manifest=root / by_recipe["prepare"][0].arg("--out") / "manifest.json",
        replay=root / by_recipe["replay"][0].arg("--out") / "manifest.json",
        audit_log=pipeline.audit_log_path(root),
        annex=tuple(root / p for p in audit.args.get("--annex", [])),
        report=root / audit.arg("--report") if audit.arg("--report") else None,
        curves=tuple(root / p for p in audit.args.get("--curves", [])),
        quantize=root / audit.arg("--quantize"),
        artifact=pipeline.artifact_at(root, root / dapt.arg("--champion")))


def stale_verdicts(root: Path, lay: Layout) -> set[str]:
    """Models whose verdict file an earlier run wrote: the gate stage is out of date with dvc.lock and its verdict
    is still the one dvc.lock recorded (a gate that failed in this run rewrote its verdict; one the run never
    reached did not)."""
    status, out = vcs.stale_stages(root), set()
    for stage in pipeline.of_recipe(root, "gate"):
        if stage.name not in status:
            continue
        rel = lay.verdicts[stage.arg("--model")].relative_to(root).as_posix()
        if not any(rel in change.get("changed outs", {}) for change in status[stage.name] if isinstance(change, dict)):
            out.add(stage.arg("--model"))
    return out



# --------------------------------------------------------------------------- #
# The candidate
# --------------------------------------------------------------------------- #


@dataclass
class Candidate:
    problems: list[str] = field(default_factory=list)
    failed_gates: list[str] = field(default_factory=list)  # gates whose verdict is `fail`: a refusal, not a crash
    held: list[dict] = field(default_factory=list)  # the undecided rules of gates whose verdict is `hold`
    run_id: str | None = None  # sha256 over the verdict files: which run this is


def run_id(lay: Layout) -> str | None:
    files = [lay.data_gate, *(lay.verdicts[m] for m in params.GatesConfig.models())]
    if not all(f.is_file() for f in files):
        return None
    return hashlib.sha256("".join(sha256_file(f) for f in files).encode()).hexdigest()


def check(root: Path, lay: Layout, cfg: params.PromoteConfig) -> Candidate:
    """Everything that stands between the run in the workspace and a promotion, named."""
    c = Candidate(run_id=run_id(lay))
    if not lay.data_gate.is_file():
        c.problems.append(f"data gate: no verdict ({lay.data_gate.relative_to(root)}); the pipeline did not get there")
    elif (v := read_json(lay.data_gate))["verdict"] != "pass":
        c.problems.append(f"data gate: {v['verdict']}: {v['reason']}")
        c.failed_gates.append("data")
    for model in params.GatesConfig.models():
        path = lay.verdicts[model]
        if not path.is_file():
            c.problems.append(f"gate {model}: no verdict ({path.relative_to(root)}); the pipeline stopped before it")
            continue
        v = read_json(path)
        if v["verdict"] != "pass":
            c.problems.append(f"gate {model}: {v['verdict']}: {v['reason']}")
        if v["verdict"] == "fail":
            c.failed_gates.append(model)
        elif v["verdict"] == "hold":
            c.held += [{"gate": model, "rule": f["rule"], "more_docs": f.get("more_docs")}
                       for f in v["findings"] if f.get("outcome") == "hold"]
        if not v.get("real", True) and not cfg.accept_test_models:
            c.problems.append(f"gate {model}: the results come from the tiny test model and are not real")
    # after the gates: a failed gate leaves itself and what follows it unlocked, which reads as stale
    stopped = (" (the pipeline stopped at the failed gate)" if c.failed_gates else
               " (the pipeline stopped at the held gate)" if c.held else "; run dvc repro")
    c.problems += [f"stale: stage {name} is out of date with dvc.lock{stopped}" for name in vcs.stale_stages(root)]
    if not lay.summary.is_file():
        c.problems.append("audit: no run summary; the audit stage did not run")
        return c
    summary = read_json(lay.summary)
    if summary["problems"]:
        c.problems.append(f"audit: {'; '.join(summary['problems'])}")
    doc = summary.get("documentation") or {}
    if doc.get("missing") is None:
        c.problems.append("documentation: the run summary does not say that the Annex IV documentation was written; "
                          "run the audit stage with --annex and --governance (dvc repro audit)")
    elif doc["missing"]:
        c.problems.append(f"documentation: {len(doc['missing'])} mandatory Annex IV parts are empty in "
                          f"{doc['governance']}: " + "; ".join(m.split(": ", 1)[-1] for m in doc["missing"])
                          + ". Write them, check with `ratchet docs check`, then dvc repro audit")
    return c


# --------------------------------------------------------------------------- #
# The swap, and finishing what a killed run started
# --------------------------------------------------------------------------- #


def _scratch(champion: Path, kind: str) -> Path:
    return champion.with_name(f".{champion.name}.{kind}-{os.getpid()}")


def recover(champion: Path) -> list[str]:
    """Undo or finish a swap a killed run left: never zero champions, never a half-built one."""
    notes = []
    for new in champion.parent.glob(f".{champion.name}.new-*"):
        shutil.rmtree(new)
        notes.append(f"removed {new.name}: a champion a killed run had not finished building")
    olds = sorted(champion.parent.glob(f".{champion.name}.old-*"))
    if olds and not champion.exists():
        os.replace(olds[-1], champion)
        notes.append(f"restored {champion.name} from {olds[-1].name}: a killed run had moved it aside")
    for old in champion.parent.glob(f".{champion.name}.old-*"):
        shutil.rmtree(old)
    return notes


def build(lay: Layout, out: Path, cand: Candidate, cycle: int, week: str | None, drop: dict | None,
          card: Card) -> dict:
    """The new champion in `out`: merged teacher, shipped model, verdicts, record, and its model card, which
    `card` words from the record, the base model's source, the training inputs and the shipped model's folder."""
    from ratchet.models import modeling

    started = time.time()
    teacher = modeling.load_sft_merged(lay.sft, lay.dapt)
    modeling.save_model(teacher, modeling.load_tokenizer(lay.sft), out / champ.TEACHER)
    write_lineage(out / champ.TEACHER, name=lay.champion / champ.TEACHER, stage="promote",
                  card=f"Champion {cycle}: the tuned teacher, the dapt model with the sft LoRA adapter merged in.",
                  params={}, parents={"dapt": lay.dapt, "sft": lay.sft}, data={}, seed=0, threads=1,
                  started=started, real=modeling.is_real(lay.dapt))
    shutil.copytree(lay.onnx, out / champ.SHIPPED)
    (out / champ.VERDICTS).mkdir()
    shutil.copy2(lay.data_gate, out / champ.VERDICTS / "data.json")
    for name, path in lay.verdicts.items():
        shutil.copy2(path, out / champ.VERDICTS / f"{name}.json")
    previous = champ.record(lay.champion)
    manifest = read_json(lay.manifest) if lay.manifest.is_file() else {"inputs": {}}
    record = {
        "cycle": cycle, "week": week, "run_id": cand.run_id,
        "promoted_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "teacher_sha256": sha256_tree(out / champ.TEACHER), "shipped_sha256": artifact_hash(out / champ.SHIPPED),
        "verdicts": {p.stem: sha256_file(p) for p in sorted((out / champ.VERDICTS).glob("*.json"))},
        "metrics": {name: read_json(path)["metrics"] for name, path in lay.verdicts.items()},
        "drop": drop, "data": {f: i["sha256"] for f, i in manifest["inputs"].items()},
        "replay": read_json(lay.replay)["sha256"] if lay.replay.is_file() else {},
        "previous": {"cycle": previous["cycle"], "run_id": previous["run_id"]} if previous else None,
        "real": all(read_json(p).get("real", True) for p in lay.verdicts.values()),
    }
    # every promoted model carries its own technical documentation, and its record the hashes of what was promoted
    record["documentation"] = {f"annex_iv{doc.suffix}": sha256_file(doc) for doc in lay.annex if doc.is_file()}
    write_json(out / champ.RECORD, record)
    for doc in lay.annex:
        if doc.is_file():
            shutil.copy2(doc, out / f"annex_iv{doc.suffix}")
    base = read_json(lay.base / "lineage.json") if (lay.base / "lineage.json").is_file() else {}
    write_text(out / "README.md", card(record, base.get("source", {}), sorted(manifest["inputs"]), lay.onnx))
    return record


def swap(champion: Path, new: Path) -> None:
    """Move `new` into place; the old champion goes aside first, so a kill leaves one `recover` can restore."""
    old = _scratch(champion, "old")
    if champion.exists():
        os.replace(champion, old)
    os.replace(new, champion)
    shutil.rmtree(old, ignore_errors=True)


def track(root: Path, champion: Path) -> None:
    """`dvc add` the champion; the first time, its placeholder README leaves git for DVC."""
    rel = champion.relative_to(root).as_posix()
    if vcs.git(root, "ls-files", "--", rel):
        vcs.git(root, "rm", "-r", "-q", "--cached", "--", rel)
    vcs.dvc(root, "add", rel)


# --------------------------------------------------------------------------- #
# The outcome
# --------------------------------------------------------------------------- #


@dataclass
class Outcome:
    code: int  # PROMOTED or REFUSED
    lines: list[str]
    entry: dict  # the audit entry
    tag: str | None = None  # the git tag the commit gets


def outcomes(log: Path) -> list[dict]:
    return [e for e in audit_log.entries(log) if e["event"] in EVENTS]


def tag_name(cfg: params.PromoteConfig, lay: Layout, entry: dict) -> str:
    """The tag of the outcome's commit: the n-th promotion is GTO version v<n>.0.0 of the champion artifact
    (<artifact>@v<n>.0.0), the n-th refusal <tag_prefix>-refused-<n> and the n-th hold <tag_prefix>-held-<n>,
    outside the registry."""
    n = sum(1 for e in outcomes(lay.audit_log) if e["event"] == entry["event"] and e["seq"] <= entry["seq"])
    if entry["event"] == "promotion":
        return f"{lay.artifact}@v{n}.0.0"
    return f"{cfg.tag_prefix}-{'refused' if entry['event'] == 'refusal' else 'held'}-{n}"


def decide(root: Path, cfg: params.PromoteConfig, card: Card, week: str | None = None,
           drop: dict | None = None, refusals: list[str] = ()) -> Outcome:
    """Promote the run in the workspace, or refuse it; the champion changes only on promotion. `card` writes the
    new champion's model card (reporting.card.model_card: a document, which this wing does not import);
    `refusals` are the failures a stage said the same inputs would repeat, each a reason to refuse."""
    lay = layout(root)
    notes = recover(lay.champion)
    cand = check(root, lay, cfg)
    if refusals:  # the run stopped there: the verdicts it never wrote and the stages after it are no news
        cand.problems, cand.held = list(refusals), []
    log = lay.audit_log
    if cand.problems:
        # a hold: the gates that spoke could not decide, none refused; anything else in the way is a refusal
        event = "hold" if cand.held and not cand.failed_gates else "refusal"
        last = (outcomes(log) or [{}])[-1]
        same = (last.get("event"), last.get("run_id"), last.get("reasons"), last.get("drop")) == (
            event, cand.run_id, cand.problems, drop)
        extra = {"held": cand.held} if event == "hold" else {"failed_gates": cand.failed_gates}
        entry = last if same else audit_log.append(  # asking again about the same run is not a new event
            log, event, run_id=cand.run_id, week=week, drop=drop, reasons=cand.problems, **extra,
            champion=(champ.record(lay.champion) or {}).get("cycle"))
        head = ("HELD: a gate could not decide on this evaluation set; the champion stays as it was:"
                if event == "hold" else "REFUSED: the champion stays as it was:")
        more = [f"  - undecided: gate {h['gate']}: {h['rule']}: "
                + (f"about {h['more_docs']} more documents would resolve it" if h["more_docs"] else
                   "its estimate sits on the limit") for h in cand.held] if event == "hold" else []
        return Outcome(EVENTS[event], notes + [head, *(f"  - {p}" for p in cand.problems), *more],
                       entry, tag_name(cfg, lay, entry))

    cycle = 1 + sum(1 for e in outcomes(log) if e["event"] == "promotion")
    new = _scratch(lay.champion, "new")
    new.mkdir(parents=True)
    try:
        record = build(lay, new, cand, cycle, week, drop, card)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    swap(lay.champion, new)
    track(root, lay.champion)
    done = log_promotion(log, lay.champion, record)
    m = record["metrics"]
    return Outcome(PROMOTED, notes + [
        f"PROMOTED: champion {record['cycle']} (run {cand.run_id[:16]})",
        f"  shipped model: domain ppl {m['onnx']['domain_ppl']:.2f} (was {m['shipped']['domain_ppl']:.2f}), "
        f"general ppl {m['onnx']['general_ppl']:.2f} (was {m['shipped']['general_ppl']:.2f})"], done,
        tag_name(cfg, lay, done))


def log_promotion(log: Path, champion: Path, record: dict) -> dict:
    """The audit entry of the promotion `record` describes: the one in the log already, or a new one."""
    done = next((e for e in outcomes(log) if e["event"] == "promotion" and e["run_id"] == record["run_id"]), None)
    return done or audit_log.append(
        log, "promotion", run_id=record["run_id"], cycle=record["cycle"], week=record["week"], drop=record["drop"],
        teacher_sha256=record["teacher_sha256"], shipped_sha256=record["shipped_sha256"],
        champion_sha256=sha256_tree(champion), verdicts=record["verdicts"], data=record["data"],
        replay=record.get("replay", {}), documentation=record.get("documentation", {}), previous=record["previous"])


def commit(root: Path, outcome: Outcome, message: str, paths: list[str]) -> str:
    """Commit `paths` (whatever changed among them) and tag it (`tag`). A path that neither exists nor is tracked
    is no change (a refusal before the first promotion has no models/champion.dvc)."""
    tracked = set(vcs.git(root, "ls-files", "--", *paths).splitlines())
    present = [p for p in paths if (root / p).exists() or any(t == p or t.startswith(p + "/") for t in tracked)]
    vcs.git(root, "add", "-A", "--", *present)
    vcs.git(root, "commit", "-q", "--allow-empty", "-m", message)
    tag(root, outcome, message)
    return vcs.git(root, "rev-parse", "HEAD")


def tag(root: Path, outcome: Outcome, message: str) -> None:
    """Tag HEAD with the outcome's annotated tag, whose message holds the audit log's head hash: a promotion as a
    GTO version of the champion assigned STAGE, a refusal with a plain git tag. Whatever is already there is kept,
    so a run killed half-way is finished by the next."""
    if not outcome.tag:
        return
    text = f"{message}\n\naudit entry {outcome.entry['seq']}: {outcome.entry['hash']}"
    if outcome.entry["event"] == "promotion":
        artifact, _, version = outcome.tag.partition("@")
        vcs.register(root, artifact, version, STAGE, text)
    elif not vcs.git(root, "tag", "--list", outcome.tag):
        vcs.git(root, "tag", "-a", outcome.tag, "-m", text)
