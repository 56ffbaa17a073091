"""`ratchet report`: write the HTML run report from what the last run left, stale verdicts marked."""
from __future__ import annotations

import argparse
from pathlib import Path

from ratchet.core import vcs
from ratchet.reporting.report import write_run_report

HELP = "write the HTML run report from what the last run left (stale verdicts marked)"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", help="where to write it (default: the audit stage's --report in dvc.yaml)")


def execute(args: argparse.Namespace) -> int:
    print(f"run report: {write_run_report(vcs.repo_root(Path.cwd()), Path(args.out) if args.out else None)}")
    return 0
