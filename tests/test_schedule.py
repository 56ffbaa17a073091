"""The schedules in schedule/ and .github/workflows all run `ratchet update` and keep its log."""
from __future__ import annotations

import os
import subprocess

import yaml

from .conftest import ROOT


def test_the_weekly_script_logs_a_week_without_a_drop_and_exits_0(tmp_path):
    (tmp_path / "incoming").mkdir()
    env = {**os.environ, "RATCHET_INCOMING": str(tmp_path / "incoming"), "RATCHET_LOGS": str(tmp_path / "logs"),
           "RATCHET_REPO": str(ROOT)}
    r = subprocess.run(["bash", str(ROOT / "schedule/weekly.sh")], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    (log,) = (tmp_path / "logs").iterdir()
    assert log.name.startswith("update-") and "nothing to do" in log.read_text()


def test_every_schedule_calls_the_weekly_update():
    cron = [line for line in (ROOT / "schedule/crontab").read_text().splitlines() if line and line[0].isdigit()]
    assert len(cron) == 1 and cron[0].split()[:5] == ["0", "3", "*", "*", "1"] and cron[0].endswith("weekly.sh")
    service = (ROOT / "schedule/ratchet-update.service").read_text()
    assert "ExecStart=/srv/ratchet/repo/schedule/weekly.sh" in service and "SuccessExitStatus=3 5" in service
    assert "OnCalendar=Mon *-*-* 03:00:00 UTC" in (ROOT / "schedule/ratchet-update.timer").read_text()
    workflow = yaml.safe_load((ROOT / ".github/workflows/weekly-update.yml").read_text())
    assert workflow[True]["schedule"] == [{"cron": "0 3 * * 1"}]  # YAML 1.1 reads the key `on` as True
    steps = "\n".join(s.get("run", "") for s in workflow["jobs"]["update"]["steps"])
    assert "ratchet update --drop" in steps and "logs/update-" in steps
