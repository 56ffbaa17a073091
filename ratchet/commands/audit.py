"""`ratchet audit verify`: check the audit log's hash chain, the heads its git tags recorded, and that every
champion version in the GTO registry is a promotion the log holds."""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from ratchet.core import audit_log, pipeline, vcs
from ratchet.eval import promote

HELP = "audit trail operations"


def arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    verify = sub.add_parser("verify", help="check that the audit log has not been altered")
    verify.add_argument("--log", help="the audit log (default: the one dvc.yaml wires, "
                                      f"{pipeline.DEFAULT_AUDIT_LOG})")


def registry_problems(log: str | Path, tags: dict[str, str]) -> list[str]:
    """Champion versions in the GTO registry (the tags <artifact>@v<n>.0.0 `ratchet promote` creates) that the log
    does not back: registered by hand (no audit entry in the message), or recording an entry that is not the
    promotion of that cycle. Nothing to check outside a ratchet repository."""
    try:
        root = vcs.repo_root(Path(log).resolve().parent)
        artifact = promote.layout(root).artifact
    except (vcs.VcsError, pipeline.WiringError, KeyError, ValueError):
        return []
    entries, problems = audit_log.entries(log), []
    for tag, text in sorted(tags.items()):
        version = re.fullmatch(rf"{re.escape(artifact)}@(v\d+\.\d+\.\d+)", tag)
        if not version:
            continue
        anchor = audit_log.ANCHOR.search(text)
        if not anchor:
            problems.append(f"{tag}: a version of {artifact} in the registry that records no audit entry "
                            "(registered outside ratchet promote)")
            continue
        seq = int(anchor.group(1))
        entry = entries[seq] if seq < len(entries) else None  # a cut-off tail: audit_log.anchored names it
        if entry is not None and (entry.get("event") != "promotion"
                                  or f"v{entry.get('cycle')}.0.0" != version.group(1)):
            problems.append(f"{tag} records audit entry {seq} (a {entry.get('event')}, cycle {entry.get('cycle')}), "
                            f"not the promotion of {version.group(1)}")
    return problems


def execute(args: argparse.Namespace) -> int:
    """Exit 1 naming every entry that breaks the chain, disagrees with a tag's recorded head, or a champion
    version the log does not back."""
    if args.log is None:
        root = vcs.repo_root(Path.cwd())
        log = pipeline.audit_log_path(root).relative_to(root).as_posix()
        log = str(root / log) if Path.cwd().resolve() != root.resolve() else log
    else:
        log = args.log
    problems = audit_log.verify(log)
    tags = vcs.tag_messages(Path(log).resolve().parent)
    if not problems:
        problems = audit_log.anchored(log, tags) + registry_problems(log, tags)
    if problems:
        print(f"{log}: TAMPERED or corrupt:", *problems, sep="\n  - ", file=sys.stderr)
        return 1
    anchors = sum(bool(audit_log.ANCHOR.search(t)) for t in tags.values())
    print(f"{log}: {len(audit_log.entries(log))} entries, hash chain intact"
          + (f", agrees with the head recorded in {anchors} git tags" if anchors else ""))
    return 0
