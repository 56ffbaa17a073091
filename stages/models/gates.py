"""Gate decisions (pure) and the check every downstream stage makes on its gate."""
from __future__ import annotations

from pathlib import Path

from ..core.io import read_json
from ..core.params import GateRule


def decide(metrics: dict[str, float], rules: list[GateRule], refs: dict[str, dict[str, float]]) -> list[dict]:
    """Check each rule; return one finding per rule with `passed` and a readable `reason`.

    A missing metric or reference fails its rule: a gate never passes by default.
    """
    findings = []
    for rule in rules:
        value = metrics.get(rule.metric)
        f = {"metric": rule.metric, "value": value, "max": rule.max, "max_ratio": rule.max_ratio,
             "ref": rule.ref if rule.max_ratio is not None else None}
        problems = []
        if value is None or value != value:  # missing or NaN
            problems.append(f"{rule.metric} was not measured")
        else:
            if rule.max is not None and not value <= rule.max:
                problems.append(f"{rule.metric} = {value:.3f} > max {rule.max}")
            if rule.max_ratio is not None:
                ref = refs.get(rule.ref, {}).get(rule.metric)
                if ref is None or ref != ref or ref <= 0:
                    problems.append(f"no {rule.metric} for reference model {rule.ref!r}")
                else:
                    ratio = value / ref
                    f["ref_value"], f["ratio"] = ref, round(ratio, 4)
                    if not ratio <= rule.max_ratio:
                        problems.append(f"{rule.metric} = {value:.3f} is {ratio:.3f}x {rule.ref}'s "
                                        f"{ref:.3f}; allowed at most {rule.max_ratio}x")
        f["passed"] = not problems
        f["reason"] = "; ".join(problems) if problems else "ok"
        findings.append(f)
    return findings


def require_pass(verdict: str | Path) -> dict:
    """Stop unless the gate verdict at `verdict` says the model may move forward."""
    path = Path(verdict)
    if not path.is_file():
        raise SystemExit(f"{path}: no gate verdict; run the gate stage first (dvc repro)")
    v = read_json(path)
    if v.get("verdict") != "pass":
        raise SystemExit(f"{path}: gate verdict is {v.get('verdict')!r}, not 'pass': {v.get('reason')}")
    return v
