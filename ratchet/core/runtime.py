"""Process set-up: offline, quiet, seeded, thread-pinned.

`start()` is called once where a process starts (each stage's and the CLI's
`__main__`, the test session, a benchmark), before any library that reads
these variables at import time (huggingface_hub, transformers, datasets,
great_expectations, presidio's tldextract) is imported. Importing a ratchet
module changes nothing.
"""
from __future__ import annotations

import functools
import importlib.abc
import json
import logging
import os
import platform
import random
import re
import sys
import warnings

# Nothing in ratchet may reach a model or dataset hub, or send telemetry.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS": "",
    "GX_ANALYTICS_ENABLED": "False",
    "DVC_STUDIO_OFFLINE": "true",  # DVCLive (training histories) and gto post to DVC Studio when configured
    "DVC_NO_ANALYTICS": "1",
}
# One line per stage event and per logged step: no progress bars from libraries
# (great_expectations draws one per metric, lm-eval and datasets one per pass).
QUIET_ENV = {
    "TQDM_DISABLE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "false",
}
NOISY_LOGGERS = ("great_expectations", "lm_eval", "lm-eval", "presidio-analyzer", "datasets", "transformers",
                 "optimum", "accelerate", "onnxruntime", "urllib3", "filelock")
# Notices about code paths ratchet does not take: bitsandbytes' optional 4-bit CPU kernel from a hub (never
# fetched here), lm-eval's onnxruntime-genai config (ratchet's ONNX folders are optimum's).
SILENT_LOGGERS = ("bitsandbytes.backends.cpu.ops", "lm_eval.models._onnx_base")
# The ONNX exporter's tracer explains its own limits on every export; quantize checks the exported graph's parity.
QUIET_WARNINGS = ("Converting a tensor to a Python boolean", "Exporting aten::index operator",
                  "You are using the legacy TorchScript-based ONNX export", "The feature will be removed")

# transformers imports scikit-learn (and with it scipy) whenever it finds it installed, for one feature ratchet
# never uses: the confidence threshold of assisted generation, in every process that loads a model
# (benchmarks/speed/bench_startup.py times it). A started process tells transformers, as it loads, that scikit-learn
# is absent.
SKIPPED_IMPORTS = {"transformers.utils.import_utils": ("_sklearn_available", False)}


class AfterImport(importlib.abc.MetaPathFinder):
    """Sets a module's attribute right after the module is first executed, before anything imported next reads it."""

    def __init__(self, name: str, attribute: str, value) -> None:
        self.name, self.attribute, self.value = name, attribute, value

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)  # once, and out of the way of the finders asked next
        spec = next(filter(None, (f.find_spec(fullname, path, target) for f in sys.meta_path
                                  if hasattr(f, "find_spec"))), None)
        if spec is not None and spec.loader is not None:
            execute = spec.loader.exec_module

            def exec_module(module) -> None:
                execute(module)
                self.apply(module)
            spec.loader.exec_module = exec_module
        return spec

    def apply(self, module) -> None:
        if not hasattr(module, self.attribute):
            raise RuntimeError(f"{self.name} has no {self.attribute}: pin the version pyproject.toml names")
        setattr(module, self.attribute, self.value)


def start() -> None:
    """Make this process offline and quiet, and keep transformers from loading scikit-learn (SKIPPED_IMPORTS).
    Call it first thing in a process; values already set win."""
    for name, (attribute, value) in SKIPPED_IMPORTS.items():
        hook = AfterImport(name, attribute, value)
        if name in sys.modules:
            hook.apply(sys.modules[name])
        elif not any(isinstance(f, AfterImport) and f.name == name for f in sys.meta_path):
            sys.meta_path.insert(0, hook)
    for key, value in {**OFFLINE_ENV, **QUIET_ENV}.items():
        os.environ.setdefault(key, value)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in SILENT_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    # transformers and peft repeat deprecation notices on every call; they are not ours to fix.
    warnings.filterwarnings("ignore", category=FutureWarning)
    for message in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message)


def seed_everything(seed: int, threads: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)


# Where a stage records a Refused failure: set by `ratchet update` around its `dvc repro`, unset otherwise.
REFUSALS_ENV = "RATCHET_REFUSALS"


class Refused(SystemExit):
    """A stage's failure that would repeat on the same inputs: a check its data or its model fails (the PII policy
    or its cap, int8 parity, a loss that is not finite), not a crash or a kill. The launcher records it where
    `ratchet update` asks (REFUSALS_ENV), and the update refuses the drop on it instead of retrying the same work
    at every scheduled run."""


def record_refusal(stage: str, reason: str) -> None:
    path = os.environ.get(REFUSALS_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"stage": stage, "reason": reason}) + "\n")


def log(stage: str, msg: str) -> None:
    print(f"[{stage}] {msg}", flush=True)


def cpu_has_bf16(cpuinfo: str, machine: str) -> bool:
    """Whether /proc/cpuinfo's text names a bf16 instruction set: avx512_bf16 or amx_bf16 on x86, bf16 on arm64."""
    wanted = r"bf16" if machine in ("aarch64", "arm64") else r"avx512_bf16|amx_bf16"
    return re.search(rf"\b(?:{wanted})\b", cpuinfo) is not None


@functools.lru_cache(maxsize=1)
def native_bf16() -> bool:
    """Whether this machine computes in bf16 natively: a CUDA GPU that supports it, or a CPU with a bf16
    instruction set (cpu_has_bf16). Elsewhere PyTorch emulates bf16, and a bf16 layer runs about 6x slower than
    fp32 (one MLP projection of SmolLM2 on an AVX2-only EPYC: 122.6 vs 19.7 ms). Params set to `auto` (the
    training stages' bf16, eval.dtype) resolve to bf16 only where this holds."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return cpu_has_bf16(f.read(), platform.machine())
    except OSError:
        return False
