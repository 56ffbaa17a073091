"""Process set-up shared by every stage: offline, seeded, thread-pinned."""
from __future__ import annotations

import os
import random

# Nothing in ratchet may reach a model or dataset hub, or send telemetry.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS": "",
    "GX_ANALYTICS_ENABLED": "False",
}
for _k, _v in OFFLINE_ENV.items():
    os.environ.setdefault(_k, _v)


def seed_everything(seed: int, threads: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)


def log(stage: str, msg: str) -> None:
    print(f"[{stage}] {msg}", flush=True)
