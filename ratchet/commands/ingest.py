"""`ratchet ingest PATH [--week 2026-W48] [--role domain|sft|general]`: add a weekly data drop under
data/drops/<week>/<role>/, tracked by DVC and logged in the audit trail.

The drop says where it comes from in SOURCE.yaml (what, origin, license, personal_data; optionally collected and
notes), in the folder PATH names or beside the file it names; it is copied to data/drops/<week>/SOURCE.yaml and
recorded in the audit entry. A drop without one, or with a vague or unknown key, is refused.

Exit codes: 0 ingested (or nothing new), 2 bad input (nothing copied), 1 DVC or the disk failed after the copy.
"""
from __future__ import annotations

import argparse
import errno
import sys
from pathlib import Path

from ratchet.core import params, vcs
from ratchet.data import ingest

HELP = "add a weekly data drop under data/drops/<week>/<role>/"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="a .jsonl or .txt file, or a folder of them (flat, or domain/ sft/ general/), "
                                "with the drop's SOURCE.yaml in that folder (or beside that file)")
    p.add_argument("--week", help="ISO week of the drop, YYYY-Www (default: this week)")
    p.add_argument("--role", choices=params.ROLES,
                   help="role of raw-text files; instruction records (prompt/response, messages) are sft")


def execute(args: argparse.Namespace) -> int:
    week = args.week
    if week is None:
        week = ingest.current_week()
        print(f"--week not given: using the current ISO week, {week}")
    try:
        lines = ingest.apply(ingest.check(Path(args.path), week, args.role), Path.cwd())
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
