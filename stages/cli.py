"""The `ratchet` command: operations around the pipeline that `dvc repro` runs.

    ratchet check                  validate params.yaml (every section) and exit
    ratchet audit verify [--log]   check the audit log's hash chain, and the heads its git tags recorded
    ratchet lineage PATH [--json]  the chain from an artifact back to the raw drop and seed files, each
                                   hash checked against lineage.json, the manifests, dvc.lock and the
                                   audit log (stages/trace.py); exit 1 naming every mismatch
    ratchet verify-repro STAGE [--keep]
                                   rerun a stage from its recorded inputs in a scratch worktree and
                                   compare every output file with the recorded one (stages/reproduce.py)
    ratchet docs check             exit 1 while a mandatory part of the Annex IV documentation that only
                                   people can write is empty in reports/governance.yaml (stages/annex.py)
    ratchet ingest PATH [--week 2026-W48] [--role domain|sft|general]
                                   add a weekly data drop (stages/data/ingest.py)
    ratchet promote [--no-commit]  make the run in the workspace the champion, or refuse it
                                   (stages/models/promote.py)
    ratchet update --drop PATH [--week 2026-W48] [--role ...]
                                   the weekly cycle: ingest, dvc repro, promote or refuse, commit,
                                   tag, push (stages/update.py). Exit codes: 0 promoted, 3 refused
                                   by a gate, 2 bad input, 4 another update running, 1 other failure
"""
from __future__ import annotations

import argparse
import errno
import sys
from pathlib import Path

from . import update
from .core import audit_log, params, runtime, vcs
from .data import ingest
from .models import promote


def run_ingest(path: str, week: str | None, role: str | None) -> int:
    """Exit 2 for an input ingest refuses (nothing copied), 1 if DVC failed after the copy."""
    if week is None:
        week = ingest.current_week()
        print(f"--week not given: using the current ISO week, {week}")
    try:
        lines = ingest.ingest(Path(path), week, role, Path.cwd())
    except ingest.IngestError as e:
        print(f"ratchet ingest: nothing was copied.\n{e}", file=sys.stderr)
        return 2
    except ingest.TrackError as e:
        print(f"ratchet ingest: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        if (vcs.repo_root(Path.cwd()) / ingest.DROPS / ingest.PENDING).is_file():
            done = (f"The files are copied; tracking and logging them is left pending in {ingest.DROPS}/"
                    f"{ingest.PENDING}, and the next `ratchet ingest` finishes it.")
        else:
            done = "Files copied aside were removed and the audit log is as it was."
        print(f"ratchet ingest: the disk is full (writing {e.filename or 'a file'}). {done} Free some space and "
              "rerun.", file=sys.stderr)
        return 1
    print(*lines, sep="\n")
    return 0


def run_promote(params_path: str, commit: bool) -> int:
    """Exit 0 when promoted, 3 when refused (the reasons on stderr), 1 when git or DVC failed."""
    try:
        root = vcs.repo_root(Path.cwd())
        outcome = promote.decide(root, params.load(root / params_path, "promote")[0])
        outcome.lines.append(f"run report: {update.write_report(root)}")
        if commit and outcome.code == promote.PROMOTED:
            sha = promote.commit(root, outcome, f"Promote: {outcome.tag}", update.COMMITTED)
            outcome.lines.append(f"committed {sha[:12]}, tagged {outcome.tag}")
    except (vcs.VcsError, params.ParamsError) as e:
        print(f"ratchet promote: {e}", file=sys.stderr)
        return 1
    print(*outcome.lines, sep="\n", file=sys.stdout if outcome.code == promote.PROMOTED else sys.stderr)
    return outcome.code


def main(argv=None) -> int:
    runtime.start()
    ap = argparse.ArgumentParser(prog="ratchet", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate params.yaml")
    check.add_argument("--params", default="params.yaml")
    audit = sub.add_parser("audit", help="audit trail operations")
    audit_sub = audit.add_subparsers(dest="action", required=True)
    verify = audit_sub.add_parser("verify", help="check that the audit log has not been altered")
    verify.add_argument("--log", default="reports/audit/log.jsonl")
    lin = sub.add_parser("lineage", help="trace an artifact back to the raw files, checking every hash")
    lin.add_argument("path", help="a model folder, a file in one, a data folder or a report")
    lin.add_argument("--json", action="store_true", help="the chain and its problems as JSON")
    rep = sub.add_parser("verify-repro", help="rerun a stage in a scratch copy and compare its outputs")
    rep.add_argument("stage", help="a stage of dvc.yaml, up to date with dvc.lock")
    rep.add_argument("--keep", action="store_true", help="keep the scratch worktree to inspect it")
    docs = sub.add_parser("docs", help="the Annex IV technical documentation")
    docs_sub = docs.add_subparsers(dest="action", required=True)
    docs_sub.add_parser("check", help="exit 1 while a mandatory part of reports/governance.yaml is empty")
    add = sub.add_parser("ingest", help="add a weekly data drop under data/drops/<week>/<role>/")
    add.add_argument("path", help="a .jsonl or .txt file, or a folder of them (flat, or domain/ sft/ general/)")
    add.add_argument("--week", help="ISO week of the drop, YYYY-Www (default: this week)")
    add.add_argument("--role", choices=params.ROLES,
                        help="role of raw-text files; instruction records (prompt/response, messages) are sft")
    prom = sub.add_parser("promote", help="promote the run in the workspace to champion, or refuse it (exit 3)")
    prom.add_argument("--params", default="params.yaml")
    prom.add_argument("--no-commit", action="store_true", help="swap and log, but leave committing to you")
    rpt = sub.add_parser("report", help="write the HTML run report from what the last run left (stale verdicts marked)")
    rpt.add_argument("--out", help="where to write it (default: the audit stage's --report in dvc.yaml)")
    upd = sub.add_parser("update", help="the weekly cycle: ingest, dvc repro, promote or refuse, commit, push")
    upd.add_argument("--drop", required=True, help="the new data drop: a file or folder, as for ratchet ingest")
    upd.add_argument("--week", help="ISO week of the drop, YYYY-Www (default: this week)")
    upd.add_argument("--role", choices=params.ROLES, help="role of raw-text files, as for ratchet ingest")
    upd.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)

    if args.command == "check":
        from .models.gates import load_rules  # the rules' metrics, checked against the metric catalogue

        try:
            configs = params.load_all(args.params)
            load_rules(args.params)
        except params.ParamsError as e:
            print(e, file=sys.stderr)
            return 2
        print(f"{args.params}: {len(configs)} sections valid ({', '.join(configs)})")
        return 0
    if args.command == "audit" and args.action == "verify":
        problems = audit_log.verify(args.log)
        tags = vcs.tag_messages(Path(args.log).resolve().parent)
        if not problems:
            problems = audit_log.anchored(args.log, tags)
        if problems:
            print(f"{args.log}: TAMPERED or corrupt:", *problems, sep="\n  - ", file=sys.stderr)
            return 1
        anchors = sum(bool(audit_log.ANCHOR.search(t)) for t in tags.values())
        print(f"{args.log}: {len(audit_log.entries(args.log))} entries, hash chain intact"
              + (f", agrees with the head recorded in {anchors} git tags" if anchors else ""))
        return 0
    if args.command == "lineage":
        from . import trace

        return trace.run(vcs.repo_root(Path.cwd()), args.path, args.json)
    if args.command == "verify-repro":
        from . import reproduce

        return reproduce.run(vcs.repo_root(Path.cwd()), args.stage, args.keep)
    if args.command == "report":
        root = vcs.repo_root(Path.cwd())
        print(f"run report: {update.write_report(root, Path(args.out) if args.out else None)}")
        return 0
    if args.command == "docs" and args.action == "check":
        from . import annex

        missing = annex.check(vcs.repo_root(Path.cwd()) / annex.GOVERNANCE)
        if missing:
            print("Annex IV documentation incomplete: what only people can write is missing:", *missing,
                  sep="\n  - ", file=sys.stderr)
            return 1
        print(f"{annex.GOVERNANCE}: every mandatory part is written")
        return 0
    if args.command == "ingest":
        return run_ingest(args.path, args.week, args.role)
    if args.command == "promote":
        return run_promote(args.params, not args.no_commit)
    if args.command == "update":
        return update.run(args.drop, args.week, args.role, args.params, Path.cwd())
    return 2


if __name__ == "__main__":
    sys.exit(main())
