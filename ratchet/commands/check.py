"""`ratchet check`: validate params.yaml, every section and every gate rule, and exit."""
from __future__ import annotations

import argparse
import sys

from ratchet.core import params
from ratchet.eval.rules import load_rules

HELP = "validate params.yaml"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default="params.yaml")


def execute(args: argparse.Namespace) -> int:
    """Exit 2 naming every key and its fix when a section or a rule is invalid."""
    try:
        configs = params.load_all(args.params)
        load_rules(args.params)  # the rules' metrics, checked against the metric catalogue
    except params.ParamsError as e:
        print(e, file=sys.stderr)
        return 2
    print(f"{args.params}: {len(configs)} sections valid ({', '.join(configs)})")
    return 0
