"""The `ratchet` command: operations around the pipeline that `dvc repro` runs.

    ratchet check                  validate params.yaml (every section) and exit
    ratchet audit verify [--log]   check the audit log's hash chain
    ratchet ingest PATH [--week 2026-W48] [--role domain|sft|general]
                                   add a weekly data drop (stages/data/ingest.py)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .core import audit_log, params, runtime
from .data import ingest


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
    print(*lines, sep="\n")
    return 0


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
    add = sub.add_parser("ingest", help="add a weekly data drop under data/drops/<week>/<role>/")
    add.add_argument("path", help="a .jsonl or .txt file, or a folder of them (flat, or domain/ sft/ general/)")
    add.add_argument("--week", help="ISO week of the drop, YYYY-Www (default: this week)")
    add.add_argument("--role", choices=params.ROLES,
                        help="role of raw-text files; instruction records (prompt/response, messages) are sft")
    args = ap.parse_args(argv)

    if args.command == "check":
        try:
            configs = params.load_all(args.params)
        except params.ParamsError as e:
            print(e, file=sys.stderr)
            return 2
        print(f"{args.params}: {len(configs)} sections valid ({', '.join(configs)})")
        return 0
    if args.command == "audit" and args.action == "verify":
        problems = audit_log.verify(args.log)
        n = len(audit_log.entries(args.log)) if not problems else None
        if problems:
            print(f"{args.log}: TAMPERED or corrupt:", *problems, sep="\n  - ", file=sys.stderr)
            return 1
        print(f"{args.log}: {n} entries, hash chain intact")
        return 0
    if args.command == "ingest":
        return run_ingest(args.path, args.week, args.role)
    return 2


if __name__ == "__main__":
    sys.exit(main())
