"""The `ratchet` command: operations around the pipeline that `dvc repro` runs.

    ratchet check                  validate params.yaml (every section) and exit
    ratchet audit verify [--log]   check the audit log's hash chain, and the heads its git tags recorded
    ratchet lineage PATH [--json]  the chain from an artifact back to the raw drop and seed files, each
                                   hash checked against lineage.json, the manifests, dvc.lock and the
                                   audit log; exit 1 naming every mismatch
    ratchet verify-repro STAGE [--keep]
                                   rerun a stage from its recorded inputs in a scratch worktree and
                                   compare every output file with the recorded one
    ratchet docs check             exit 1 while a mandatory part of the Annex IV documentation that only
                                   people can write is empty in reports/governance.yaml
    ratchet ingest PATH [--week 2026-W48] [--role domain|sft|general]
                                   add a weekly data drop
    ratchet promote [--no-commit]  make the run in the workspace the champion, or refuse it
    ratchet report [--out PATH]    write the HTML run report from what the last run left
    ratchet update --drop PATH [--week 2026-W48] [--role ...]
                                   the weekly cycle: ingest, dvc repro, promote or refuse, commit,
                                   tag, push. Exit codes: 0 promoted, 3 refused by a gate, 2 bad
                                   input, 4 another update running, 1 other failure

Each verb is one module of ratchet/commands/, named as the verb.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from ratchet.core import runtime

# verb -> module of ratchet.commands; each has HELP, arguments(parser) and execute(args) -> exit code
COMMANDS = {
    "check": "check",
    "audit": "audit",
    "lineage": "lineage",
    "verify-repro": "verify_repro",
    "docs": "docs",
    "ingest": "ingest",
    "promote": "promote",
    "report": "report",
    "update": "update",
}


def command(verb: str):
    return importlib.import_module(f"ratchet.commands.{COMMANDS[verb]}")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="ratchet", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    for verb in COMMANDS:
        module = command(verb)
        module.arguments(sub.add_parser(verb, help=module.HELP, description=module.__doc__,
                                        formatter_class=argparse.RawDescriptionHelpFormatter))
    return ap


def main(argv=None) -> int:
    runtime.start()
    args = parser().parse_args(argv)
    return command(args.command).execute(args)


if __name__ == "__main__":
    sys.exit(main())
