"""The HTML run report: cycles from the audit log, verdicts with intervals, and the page in a real browser."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ratchet.reporting import report

BROWSER = shutil.which("chromium")


def gate(seq, model, verdict, domain, t="2026-11-20T00:00:00Z"):
    return {"event": "gate", "seq": seq, "model": model, "verdict": verdict, "time_utc": t,
            "metrics": {"domain_ppl": domain}, "intervals": {"domain_ppl": [domain - 1, domain + 1]}}


LOG = [
    {"event": "data_gate", "seq": 0, "verdict": "pass", "time_utc": "2026-11-20T00:00:00Z"},
    gate(1, "sft", "pass", 100.0), gate(2, "onnx", "fail", 150.0),
    {"event": "refusal", "seq": 3, "run_id": "a", "week": "2026-W47", "reasons": ["stale"], "time_utc": "t3"},
    {"event": "refusal", "seq": 4, "run_id": "a", "week": "2026-W47", "reasons": ["gate onnx: fail"], "time_utc": "t4"},
    gate(5, "sft", "pass", 98.0), gate(6, "onnx", "fail", 149.0), gate(7, "onnx", "pass", 120.0),  # a rerun
    {"event": "promotion", "seq": 8, "run_id": "b", "week": "2026-W48", "cycle": 1, "time_utc": "t8"},
    gate(9, "sft", "pass", 97.0),
]


def test_cycles_group_the_log_by_decision_and_keep_the_last_gate_of_each_model():
    c = report.cycles(LOG)
    assert [x["outcome"] for x in c] == ["refusal", "promotion", "undecided"]
    assert c[0]["reasons"] == ["gate onnx: fail"], "asking again about the same run is the same cycle"
    assert c[1]["gates"]["onnx"]["seq"] == 7 and c[1]["gates"]["onnx"]["verdict"] == "pass"
    assert list(c[2]["gates"]) == ["sft"] and c[2]["data"]["seq"] == 0
    assert [x["label"] for x in c] == ["#1 2026-W47", "#2 2026-W48", "#3"]


def verdict(model, verdict, value, reason="every rule passed"):
    findings = [] if verdict == "reference" else [
        {"rule": "domain_ppl at most 1.1x base's", "value": value, "ref_value": 100.0, "estimate": value / 100,
         "ci": [value / 100 - 0.02, value / 100 + 0.02], "limit": 1.1, "kind": "ratio", "higher_is_better": False,
         "resolved": True, "passed": verdict == "pass"}]
    return {"model": model, "path": f"models/{model}", "verdict": verdict, "reason": reason, "real": False,
            "metrics": {"domain_ppl": value}, "intervals": {"domain_ppl": [value - 3, value + 3]},
            "eval_params": {"confidence": 0.9}, "findings": findings, "time_utc": "2026-11-25T00:00:00Z",
            "wall_time_s": 1.0, "answers": [{"id": "q1", "question": "What does os.path.join do?",
                                             "reference": "Join path components."}],
            "scores": {"ratchet_answers": [{"id": "q1", "answer": f"{model} says <b>hi</b>"}]}}


CURVES = {"dapt": [{"step": s, "loss": 3 - s / 10, "lr": 1e-4} for s in range(1, 11)]}
MANIFEST = {"drops": {"seed": {"in": 100, "kept": 80, "redacted": 5, "quarantined": 15,
                               "rules": {"pii": 3, "near_duplicate": 12, "language": 0},
                               "splits": {"train": 70, "heldout": 15}}}}


def page(verdicts, stale=()):
    return report.build(verdicts, CURVES, MANIFEST, LOG, quantize=None, stale=stale)


def test_a_failed_gate_heads_the_page_and_every_figure_is_drawn():
    html = page({"base": verdict("base", "reference", 100.0), "onnx": verdict("onnx", "fail", 130.0, "too <worse>")})
    assert 'id="decision">Stopped: the onnx gate refused' in html and "too &lt;worse&gt;" in html
    for fig in ("fig-metrics", "fig-curves", "fig-funnel", "fig-cycles"):
        assert f'<figure id="{fig}"><svg' in html, fig
    assert "onnx says &lt;b&gt;hi&lt;/b&gt;" in html, "model output is text, never markup"
    assert "quarantined: near_duplicate" in html and "Tiny test model" in html


def test_a_verdict_an_earlier_run_wrote_is_marked_stale_and_left_out_of_the_answers():
    html = page({"base": verdict("base", "reference", 100.0), "onnx": verdict("onnx", "pass", 90.0)}, stale={"onnx"})
    assert "Incomplete: the gates of onnx did not run" in html
    assert "onnx says" not in html and "base says" in html
    fresh = page({"base": verdict("base", "reference", 100.0), "onnx": verdict("onnx", "pass", 90.0)})
    assert "Every gate passed (onnx)" in fresh


# Run in the page by the browser: every figure's drawn size and the document's own measures.
PROBE = """<script>
const figs = [...document.querySelectorAll('figure svg')].map(s => {
  const r = s.getBoundingClientRect(); return {id: s.parentElement.id, w: r.width, h: r.height,
    texts: s.querySelectorAll('text').length}; });
document.body.setAttribute('data-probe', JSON.stringify({figs,
  width: document.documentElement.scrollWidth, height: document.documentElement.scrollHeight,
  tables: document.querySelectorAll('table').length}));
</script>"""
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def open_in_browser(path: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([BROWSER, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,900",
                           *extra, path.resolve().as_uri()], capture_output=True, text=True, timeout=120)


def browser_probe(html: str, tmp_path: Path) -> dict:
    probed = tmp_path / "probed.html"
    probed.write_text(html.replace("</body>", PROBE + "</body>"))
    dom = open_in_browser(probed, tmp_path, "--dump-dom").stdout
    start = dom.index('data-probe="') + len('data-probe="')
    return json.loads(dom[start:dom.index('"', start)].replace("&quot;", '"'))


def needs_browser():
    if BROWSER is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: .ci/install installs Debian's chromium")
        pytest.skip("no chromium on this machine (apt-get install chromium)")


def check_in_browser(html: str, tmp_path: Path, figures: set[str]) -> Path:
    """Lays the page out in headless Chromium: each figure drawn at a readable size with its text, the page no
    wider than the window; returns a screenshot that is not blank."""
    needs_browser()
    probe = browser_probe(html, tmp_path)
    drawn = {f["id"]: f for f in probe["figs"]}
    assert set(drawn) == figures
    for f in drawn.values():
        assert f["w"] >= 300 and f["h"] >= 100 and f["texts"] > 3, f
    assert probe["width"] <= 1280 and probe["tables"] >= 4, probe
    shot = tmp_path / "report.png"
    page_file = tmp_path / "report.html"
    page_file.write_text(html)
    open_in_browser(page_file, tmp_path, f"--screenshot={shot}")
    from PIL import Image

    colours = Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50, "the screenshot is blank"
    return shot


def test_the_page_lays_out_in_a_real_browser(tmp_path):
    html = page({"base": verdict("base", "reference", 100.0), "onnx": verdict("onnx", "fail", 130.0)})
    check_in_browser(html, tmp_path, {"fig-metrics", "fig-curves", "fig-funnel", "fig-cycles"})
