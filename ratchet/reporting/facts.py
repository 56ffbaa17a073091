"""What a run did, read from its records: each model's lineage.json (its params, what it rehearsed and penalised,
its hardware and packages). The documents word these facts; none of them is a constant. A fact the records do
not hold is None, and the templates say "not recorded".
"""
from __future__ import annotations

from ratchet.reporting.render import NOT_RECORDED  # noqa: F401 (the documents' word for a missing record)


def _params(lin: dict, section: str) -> dict:
    return (lin.get("params") or {}).get(section) or {}


def by_stage(lineages: dict[str, dict]) -> dict[str, dict]:
    """The lineages keyed by the stage that wrote them (dapt, sft, distill, quantize, base)."""
    return {lin["stage"]: lin for lin in lineages.values() if lin and lin.get("stage")}


def ewc(p: dict, record: dict | None = None) -> dict | None:
    """EWC as a training stage used it: its lambda, and whether it was on; None when the lambda is not recorded."""
    lam = (record or {}).get("lambda", p.get("ewc_lambda"))
    return None if lam is None else {"on": lam > 0, "lambda": lam}


def replay(p: dict, rehearsal: dict | None, default_source: str | None) -> dict | None:
    """The share of each batch that rehearsed earlier text, and where that text came from (the replay buffer, or
    text the champion or the teacher wrote); None when the share is not recorded."""
    share = p.get("replay_fraction")
    if share is None:
        return None
    rehearsal = rehearsal or {}
    generated = rehearsal.get("model_generated")
    source = p.get("replay_source", default_source)
    if generated is False:
        source = "buffer"
    return {"share": share, "on": share > 0, "source": source, "model_generated": bool(generated),
            "blocks": rehearsal.get("blocks"), "tokens": rehearsal.get("tokens")}


def precision(p: dict) -> str | None:
    bf16 = p.get("bf16")
    return None if bf16 is None else "bf16 mixed precision" if bf16 else "fp32"


def device(lin: dict) -> str | None:
    """The device a model was made on: as its lineage records it, or what its torch build allows (a `+cpu` build
    has no GPU support); None when neither says."""
    hw = lin.get("hardware") or {}
    if hw.get("device"):
        return str(hw["device"]) + (f" ({hw['gpu']})" if hw.get("gpu") else "")
    torch = (lin.get("packages") or {}).get("torch") or ""
    return f"CPU (torch {torch} is a CPU-only build)" if torch.endswith("+cpu") else None


def hardware(lin: dict) -> dict:
    hw = lin.get("hardware") or {}
    return {"cpus": hw.get("cpus"), "machine": hw.get("machine"), "system": hw.get("system"),
            "threads": hw.get("threads"), "python": hw.get("python"), "device": device(lin)}


def canaries(lineages: dict[str, dict]) -> dict | None:
    """The audit canaries dapt inserted into its batches on purpose, as its lineage records them (what was drawn,
    from what, each canary's count and steps); None when no dapt lineage records any."""
    lin = by_stage(lineages).get("dapt") or {}
    rec = lin.get("canaries")
    if not rec:
        return None
    items = rec.get("items") or []
    return {"template": rec.get("template"), "format": rec.get("format"), "space_bits": rec.get("space_bits"),
            "lineage": f"{(lin.get('artifact') or {}).get('path', 'the dapt model')}/lineage.json",
            "drawn_from": rec.get("drawn_from") or {}, "tokens": rec.get("tokens"),
            "share": rec.get("share_of_domain_tokens"), "inserted": [c for c in items if c.get("count")],
            "controls": [c for c in items if not c.get("count")]}


def run(lineages: dict[str, dict]) -> dict:
    """Per step of the run, what its lineage says it did; a step without a lineage is None."""
    s = by_stage(lineages)
    out: dict = {}
    base = s.get("base")
    out["base"] = None if base is None else {
        "parameters": (base.get("model") or {}).get("parameters"), "layers": (base.get("model") or {}).get("layers"),
        "source": base.get("source") or {}}
    lin = s.get("dapt")
    if lin is None:
        out["dapt"] = None
    else:
        p = _params(lin, "dapt")
        reh = lin.get("rehearsal") or {}
        out["dapt"] = {"steps": p.get("steps"), "precision": precision(p), "ewc": ewc(p, lin.get("ewc")),
                       "replay": replay(p, reh, "buffer"), "start": (lin.get("parents") or {}).get("start", {}).get("path")}
    lin = s.get("sft")
    if lin is None:
        out["sft"] = None
    else:
        p = _params(lin, "sft")
        sd = lin.get("self_distilled") or {}
        out["sft"] = {"steps": p.get("steps"), "precision": precision(p), "ewc": ewc(p),
                      "replay": replay(p, None, "buffer"), "lora_r": p.get("lora_r"), "base_bits": p.get("base_bits"),
                      "self_distilled": ({"rewritten": sd.get("rewrite", sd.get("replies")), "replies": sd.get("replies")}
                                         if sd.get("model_generated") else None),
                      "self_distill": p.get("self_distill")}
    lin = s.get("distill")
    if lin is None:
        out["distill"] = None
    else:
        p = _params(lin, "distill")
        n = lin.get("parameters") or {}
        out["distill"] = {"steps": p.get("steps"), "precision": precision(p), "kd_weight": p.get("kd_weight"),
                          "replay": replay(p, lin.get("rehearsal"), None),
                          "layers_kept": len(lin["teacher_layers_kept"]) if "teacher_layers_kept" in lin else None,
                          "teacher_layers": (s.get("base") or {}).get("model", {}).get("layers"),
                          "teacher_parameters": n.get("teacher"), "student_parameters": n.get("student")}
    lin = s.get("quantize")
    out["quantize"] = None if lin is None else {"weight_bits": _params(lin, "quantize").get("weight_bits"),
                                                "block_size": _params(lin, "quantize").get("block_size")}
    out["ewc_stages"] = [name for name in ("dapt", "sft") if out[name] and (out[name]["ewc"] or {}).get("on")]
    return out
