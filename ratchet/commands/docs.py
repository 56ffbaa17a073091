"""`ratchet docs check`: exit 1 while a mandatory part of the Annex IV documentation that only people can write
is empty in reports/governance.yaml."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ratchet.core import vcs
from ratchet.reporting import annex

HELP = "the Annex IV technical documentation"


def arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    sub.add_parser("check", help="exit 1 while a mandatory part of reports/governance.yaml is empty")


def execute(args: argparse.Namespace) -> int:
    missing = annex.check(vcs.repo_root(Path.cwd()) / annex.GOVERNANCE)
    if missing:
        print("Annex IV documentation incomplete: what only people can write is missing:", *missing,
              sep="\n  - ", file=sys.stderr)
        return 1
    print(f"{annex.GOVERNANCE}: every mandatory part is written")
    return 0
