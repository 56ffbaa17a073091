"""`ratchet audit verify`: check the audit log's hash chain, and the heads its git tags recorded."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ratchet.core import audit_log, pipeline, vcs

HELP = "audit trail operations"


def arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    verify = sub.add_parser("verify", help="check that the audit log has not been altered")
    verify.add_argument("--log", help="the audit log (default: the one dvc.yaml wires, "
                                      f"{pipeline.DEFAULT_AUDIT_LOG})")


def execute(args: argparse.Namespace) -> int:
    """Exit 1 naming every entry that breaks the chain or disagrees with a tag's recorded head."""
    if args.log is None:
        root = vcs.repo_root(Path.cwd())
        log = pipeline.audit_log_path(root).relative_to(root).as_posix()
        log = str(root / log) if Path.cwd().resolve() != root.resolve() else log
    else:
        log = args.log
    problems = audit_log.verify(log)
    tags = vcs.tag_messages(Path(log).resolve().parent)
    if not problems:
        problems = audit_log.anchored(log, tags)
    if problems:
        print(f"{log}: TAMPERED or corrupt:", *problems, sep="\n  - ", file=sys.stderr)
        return 1
    anchors = sum(bool(audit_log.ANCHOR.search(t)) for t in tags.values())
    print(f"{log}: {len(audit_log.entries(log))} entries, hash chain intact"
          + (f", agrees with the head recorded in {anchors} git tags" if anchors else ""))
    return 0
