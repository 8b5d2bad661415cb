"""`exsf demo` is the newcomer's first contact: it must run, converge on every step and exit
0 with nothing but the package installed (embedded bus, emulators)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_demo_converges(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "EXSF_"))}
    r = subprocess.run(
        [sys.executable, "-m", "services.cli", "--log-level", "WARNING", "demo", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    out = r.stdout
    assert out.count("converged in") == 6, out
    assert "All steps converged" in out
    assert "audit: field 'department'" in out and "Analytical Engines (Outlook)" in out
    assert "Salesforce contacts: 3, Outlook contacts in Alice's folder: 3" in out
