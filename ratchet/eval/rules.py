"""Gate decisions: rules checked on per-document scores, each on a bootstrap interval.

A rule bounds one metric: absolutely (`max` for a lower-is-better metric, `min`
for a higher-is-better one), or against a reference model scored on the same
documents (`max_ratio`: at most this many times worse; `max_worse`: at most this
much worse, in the metric's units; `min_gain`: at least this much better). With
`per_source` the rule holds for each source's documents on its own, so a cycle
cannot forget an earlier drop behind a gain on the newest one; `source: newest`
checks the cycle's newest source alone (a gain a cycle must show on what it
trained on), `source: earlier` each earlier source alone. A source with no
documents of the metric's task is not checked: a drop with no domain text has
no knowledge of its own to gain.

Each check is decided on a bootstrap confidence interval of how much worse the
candidate is (paired with the reference: the same resampled documents score
both). Oriented so that larger is worse, against the rule's limit, it has one
of three outcomes:

- pass: the whole interval is within the limit;
- fail: the whole interval is beyond it;
- hold: the interval spans the limit. The evaluation set cannot tell, so
  nothing is decided: the finding says about how many more documents would
  resolve it, and a gate with a hold moves nothing forward (but it refuses
  nothing either: the same model on a larger evaluation set may pass).

A `precondition` rule that does not pass holds: the measures it conditions
cannot be read, so they decide nothing either way.
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


def checks(rule: GateRule, docs: dict, newest: str | None = None) -> list[tuple[str, float, str | None, str]]:
    """(kind, limit, source, description) for every check one rule makes on a candidate's documents (`newest`:
    the cycle's newest source, for a rule with `source`)."""
    bounds = []
    if rule.max is not None:
        bounds.append(("value", rule.max, f"<= {rule.max:g}"))
    if rule.min is not None:  # higher is better: the negated value is bounded
        bounds.append(("value", -rule.min, f">= {rule.min:g}"))
    if rule.max_ratio is not None:
        bounds.append(("ratio", rule.max_ratio, f"at most {rule.max_ratio:g}x {rule.ref}'s"))
    if rule.max_worse is not None:
        bounds.append(("diff", rule.max_worse, f"at most {rule.max_worse:g} worse than {rule.ref}'s"))
    if rule.min_gain is not None:  # better by at least min_gain: worse by at most -min_gain
        bounds.append(("gain", -rule.min_gain, f"at least {rule.min_gain:g} better than {rule.ref}'s"))
    if rule.source is not None:
        found = scores.sources(rule.metric, docs)
        if found and newest is None:
            raise ValueError(f"a {rule.metric} rule checks the {rule.source} source(s): name the newest source")
        srcs = [s for s in found if (s == newest) == (rule.source == "newest")]
    else:
        srcs = (scores.sources(rule.metric, docs) or [None]) if rule.per_source else [None]
    return [(kind, limit, src, f"{rule.metric}{f'[{src}]' if src else ''} {text}")
            for kind, limit, text in bounds for src in srcs]


def more_documents(est: scores.Estimate, limit: float, cap: int = 10**6) -> int | None:
    """About how many more documents would shrink the interval off the limit: the arm of the interval on the
    limit's side falls as 1/sqrt(n), so n * (arm / distance of the estimate from the limit)^2 documents resolve
    it, if the estimate stays where it is. None when the estimate is on the limit (or beyond `cap` documents)."""
    arm = est.high - est.point if limit >= est.point else est.point - est.low
    gap = abs(est.point - limit)
    if gap <= 0 or not math.isfinite(arm):
        return None
    need = math.ceil(est.n * (arm / gap) ** 2)
    return max(1, need - est.n) if need <= cap else None


def outcome(findings: list[dict]) -> str:
    """A gate's verdict from its findings: fail if any fails, else hold if any holds, else pass."""
    kinds = {f["outcome"] for f in findings}
    return "fail" if "fail" in kinds else "hold" if "hold" in kinds else "pass"


def decide(docs: dict, rules: list[GateRule], refs: dict[str, dict], *, draws: int = 1000,
           confidence: float = 0.9, seed: int = 0, newest: str | None = None) -> list[dict]:
    """Check each rule on the candidate's per-document scores; one finding per check (`newest`: the cycle's
    newest source, which rules with `source` need).

    `docs` and each `refs[name]` are {task: [per-document rows]} (scores.per_document).
    A missing metric or reference fails its check: a gate never passes by default.
    """
    findings = []
    for rule in rules:
        for kind, limit, source, text in checks(rule, docs, newest):
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
                    est = scores.worse_by(rule.metric, docs, ref, "diff" if kind == "gain" else kind, source=source,
                                          draws=draws, confidence=confidence, seed=seed)
                except ValueError as e:
                    est, problem = None, str(e)
            if problem is None and not math.isfinite(est.point):
                problem = f"{rule.metric} was not measured"
            if problem is not None:
                f.update(outcome="fail", passed=False, resolved=True, reason=f"{f['rule']}: {problem}")
                findings.append(f)
                continue
            if ref is not None:
                f["ref_value"] = scores.value(rule.metric, ref, source)
            f.update(estimate=round(est.point, 6), ci=[round(est.low, 6), round(est.high, 6)], docs=est.n)
            if kind == "gain":  # a gain is shown only above its limit: no better (the same model) fails
                result = "pass" if est.high < limit else "fail" if est.low >= limit else "hold"
            else:
                result = "pass" if est.high <= limit else "fail" if est.low > limit else "hold"
            resolved = result != "hold"
            shown = f"{est.point:.4g} (CI {est.low:.4g}..{est.high:.4g}, {est.n} docs)"
            what = {"value": f"{rule.metric} =", "ratio": "ratio", "diff": "worse by", "gain": "better by"}[kind]
            if kind == "gain":  # how much better, the interval turned round
                shown = "better by", f"{-est.point:.4g} (CI {-est.high:.4g}..{-est.low:.4g}, {est.n} docs)"
            if kind == "value" and metric.higher_is_better:
                shown = f"{-est.point:.4g} (CI {-est.high:.4g}..{-est.low:.4g}, {est.n} docs)"
            reason = f"{f['rule']}: {what} {shown}"
            if result == "hold":
                more = more_documents(est, limit)
                f["more_docs"] = more
                reason += ("; the interval spans the limit: "
                           + (f"about {more} more documents would resolve it" if more is not None
                              else "the estimate sits on the limit: no feasible number of documents resolves it"))
            if rule.precondition and result == "fail":
                result = "hold"
                reason += "; a precondition: the measures it conditions cannot be read"
            f.update(outcome=result, passed=result == "pass", resolved=resolved,
                     reason="ok" if result == "pass" else reason)
            findings.append(f)
    return findings
