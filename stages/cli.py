"""The `ratchet` command: operations around the pipeline that `dvc repro` runs.

    ratchet check                  validate params.yaml (every section) and exit
    ratchet audit verify [--log]   check the audit log's hash chain
"""
from __future__ import annotations

import argparse
import sys

from .common import audit_log, params


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="ratchet", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate params.yaml")
    check.add_argument("--params", default="params.yaml")
    audit = sub.add_parser("audit", help="audit trail operations")
    audit_sub = audit.add_subparsers(dest="action", required=True)
    verify = audit_sub.add_parser("verify", help="check that the audit log has not been altered")
    verify.add_argument("--log", default="reports/audit/log.jsonl")
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
    return 2


if __name__ == "__main__":
    sys.exit(main())
