"""`exsf demo` is the newcomer's first contact: it must run, converge on every step and exit
0 with nothing but the package installed (embedded bus, emulators)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _demo(data_dir: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "EXSF_"))}
    r = subprocess.run(
        [sys.executable, "-m", "services.cli", "--log-level", "WARNING", "demo", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=data_dir,
    )
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    assert "Traceback" not in r.stdout + r.stderr, r.stderr[-3000:]
    return r.stdout


def test_demo_converges_on_every_run_of_one_data_dir(tmp_path: Path) -> None:
    # The second run used to fail: cursors and the replay id kept from the first run pointed
    # at the previous run's emulators.
    for run in (1, 2):
        out = _demo(tmp_path)
        assert f"run {run}" in out, out
        assert out.count("converged in") == 6, out
        assert "All steps converged" in out
        assert "audit: field 'department'" in out and "Analytical Engines (Outlook)" in out
        assert "Salesforce contacts: 3, Outlook contacts in Alice's folder: 3" in out
    assert (tmp_path / "run1").is_dir() and (tmp_path / "run2").is_dir()
