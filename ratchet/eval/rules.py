"""Gate decisions: rules checked on per-document scores, each on a bootstrap interval.

A rule bounds one metric: absolutely (`max` for a lower-is-better metric, `min`
for a higher-is-better one), or against a reference model scored on the same
documents (`max_ratio`: at most this many times worse; `max_worse`: at most this
much worse, in the metric's units). With `per_source` the rule holds for each
source's documents on its own, so a cycle cannot forget an earlier drop behind
a gain on the newest one.

Each check is decided on a bootstrap confidence interval of how much worse the
candidate is (paired with the reference: the same resampled documents score
both). Oriented so that larger is worse, against the rule's limit:

- the whole interval within the limit: pass;
- the whole interval beyond it: fail;
- the interval spans the limit: the evaluation set cannot resolve the rule's
  tolerance. The point estimate decides, and the finding is flagged
  `resolved: false` so the verdict shows the gate was decided inside the noise.
"""
from __future__ import annotations

import math

from ratchet.core import params
from ratchet.core.params import GateRule, GatesConfig, ParamsError
from ratchet.eval import scores


def rule_problems(cfg: GatesConfig) -> list[str]:
    """Rules whose metric is not in the catalogue, or whose bound points the wrong way for its direction."""
    out = []
    for model in cfg.models():
        for where, r in dict(cfg.located(model)).items():  # a group's rule once, not once per ref
            metric = scores.METRICS.get(r.metric)
            if metric is None:
                out.append(f"{where}.metric: {r.metric!r} is not one of {', '.join(scores.METRICS)}")
            elif r.max is not None and metric.higher_is_better:
                out.append(f"{where}.max: higher {r.metric} is better; bound it with `min`")
            elif r.min is not None and not metric.higher_is_better:
                out.append(f"{where}.min: lower {r.metric} is better; bound it with `max`")
    return out


def load_rules(path) -> GatesConfig:
    """The gates section of params.yaml, its metrics checked against the catalogue (ParamsError if not)."""
    cfg = params.load(path, "gates")[0]
    problems = rule_problems(cfg)
    if problems:
        raise ParamsError("params.yaml has problems:\n  - " + "\n  - ".join(problems))
    return cfg


def checks(rule: GateRule, docs: dict) -> list[tuple[str, float, str | None, str]]:
    """(kind, limit, source, description) for every check one rule makes on a candidate's documents."""
    bounds = []
    if rule.max is not None:
        bounds.append(("value", rule.max, f"<= {rule.max:g}"))
    if rule.min is not None:  # higher is better: the negated value is bounded
        bounds.append(("value", -rule.min, f">= {rule.min:g}"))
    if rule.max_ratio is not None:
        bounds.append(("ratio", rule.max_ratio, f"at most {rule.max_ratio:g}x {rule.ref}'s"))
    if rule.max_worse is not None:
        bounds.append(("diff", rule.max_worse, f"at most {rule.max_worse:g} worse than {rule.ref}'s"))
    srcs = (scores.sources(rule.metric, docs) or [None]) if rule.per_source else [None]
    return [(kind, limit, src, f"{rule.metric}{f'[{src}]' if src else ''} {text}")
            for kind, limit, text in bounds for src in srcs]


def decide(docs: dict, rules: list[GateRule], refs: dict[str, dict], *, draws: int = 1000,
           confidence: float = 0.9, seed: int = 0) -> list[dict]:
    """Check each rule on the candidate's per-document scores; one finding per check.

    `docs` and each `refs[name]` are {task: [per-document rows]} (scores.per_document).
    A missing metric or reference fails its check: a gate never passes by default.
    """
    findings = []
    for rule in rules:
        for kind, limit, source, text in checks(rule, docs):
            metric = scores.METRICS[rule.metric]
            f = {"metric": rule.metric, "source": source, "ref": rule.ref if kind != "value" else None,
                 "kind": kind, "limit": limit, "higher_is_better": metric.higher_is_better, "rule": text,
                 "value": scores.value(rule.metric, docs, source)}
            ref = None if kind == "value" else refs.get(rule.ref)
            problem = None
            if kind != "value" and ref is None:
                problem = f"no scores for reference model {rule.ref!r}"
            else:
                try:
                    est = scores.worse_by(rule.metric, docs, ref, kind, source=source, draws=draws,
                                          confidence=confidence, seed=seed)
                except ValueError as e:
                    est, problem = None, str(e)
            if problem is None and not math.isfinite(est.point):
                problem = f"{rule.metric} was not measured"
            if problem is not None:
                f.update(passed=False, resolved=True, reason=f"{f['rule']}: {problem}")
                findings.append(f)
                continue
            if ref is not None:
                f["ref_value"] = scores.value(rule.metric, ref, source)
            f.update(estimate=round(est.point, 6), ci=[round(est.low, 6), round(est.high, 6)], docs=est.n)
            resolved = est.high <= limit or est.low > limit
            passed = est.high <= limit if resolved else est.point <= limit
            shown = f"{est.point:.4g} (CI {est.low:.4g}..{est.high:.4g}, {est.n} docs)"
            what = {"value": f"{rule.metric} =", "ratio": "ratio", "diff": "worse by"}[kind]
            if kind == "value" and metric.higher_is_better:
                shown = f"{-est.point:.4g} (CI {-est.high:.4g}..{-est.low:.4g}, {est.n} docs)"
            reason = f"{f['rule']}: {what} {shown}"
            if not resolved:
                reason += "; the interval spans the limit: too few documents to resolve this tolerance"
            f.update(passed=passed, resolved=resolved, reason=reason if not passed or not resolved else "ok")
            findings.append(f)
    return findings
