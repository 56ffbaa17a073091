"""Run one pipeline stage as a process: python -m stages STAGE [--args ...]

    python -m stages dapt --base models/base --champion models/champion ...

This is where a ratchet process starts (dvc.yaml calls every stage this way):
the environment is made offline and quiet (runtime.start) before the stage
module and the libraries it imports are loaded, since some of them (tqdm,
huggingface_hub) read their settings once, at import.
"""
import errno
import importlib
import sys

from ratchet.core import runtime

STAGES = ("base", "prepare", "validate", "datasheets", "replay", "gate", "dapt", "fisher", "sft", "distill", "quantize",
          "audit")


def launch(argv: list[str]) -> None:
    if not argv or argv[0] not in STAGES:
        raise SystemExit(f"usage: python -m stages STAGE [args]; STAGE is one of {', '.join(STAGES)}")
    runtime.start()
    try:
        importlib.import_module(f"stages.{argv[0]}").main(argv[1:])
    except runtime.Refused as e:
        runtime.record_refusal(argv[0], str(e.code))
        raise
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        raise SystemExit(f"{argv[0]}: the disk is full (writing {e.filename or 'an output'}). Nothing was "
                         "half-written: outputs are built aside and renamed into place, so the previous ones are "
                         "intact. Free some space and rerun.") from None


if __name__ == "__main__":
    launch(sys.argv[1:])
