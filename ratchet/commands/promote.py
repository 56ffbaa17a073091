"""`ratchet promote [--params params.yaml] [--no-commit]`: make the run in the workspace the champion, or refuse
it, and write the run report.

Exit codes: 0 promoted, 3 refused (the reasons on stderr), 1 git or DVC failed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ratchet.core import params, vcs
from ratchet.eval import promote
from ratchet.reporting.card import model_card
from ratchet.reporting.report import write_run_report

HELP = "promote the run in the workspace to champion, or refuse it (exit 3)"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--no-commit", action="store_true", help="swap and log, but leave committing to you")


def execute(args: argparse.Namespace) -> int:
    try:
        root = vcs.repo_root(Path.cwd())
        outcome = promote.decide(root, params.load(root / args.params, "promote")[0], model_card)
        outcome.lines.append(f"run report: {write_run_report(root)}")
        if not args.no_commit and outcome.code == promote.PROMOTED:
            sha = promote.commit(root, outcome, f"Promote: {outcome.tag}", promote.COMMITTED)
            outcome.lines.append(f"committed {sha[:12]}, registered {outcome.tag} in stage {promote.STAGE}")
    except (vcs.VcsError, params.ParamsError) as e:
        print(f"ratchet promote: {e}", file=sys.stderr)
        return 1
    print(*outcome.lines, sep="\n", file=sys.stdout if outcome.code == promote.PROMOTED else sys.stderr)
    return outcome.code
