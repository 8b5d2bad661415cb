"""`exsf demo` is the newcomer's first contact: it must run, converge on every step and exit
0 with nothing but the package installed (embedded bus, emulators), and tell only its story
on the terminal: logs go to a file, no traceback anywhere, and the URLs it prints answer."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "EXSF_"))}


def _story_only(out: str, err: str) -> None:
    assert "Traceback" not in out + err, err[-3000:]
    assert err == "", err[-3000:]  # the services log to a file, not the terminal
    json_lines = [line for line in out.splitlines() if line.lstrip().startswith("{")]
    assert json_lines == [], json_lines[:3]
    assert out.rstrip().splitlines()[-1].startswith("What next: `exsf demo --seconds 600`"), out[-500:]


def _demo(data_dir: Path) -> str:
    r = subprocess.run(
        [sys.executable, "-m", "services.cli", "demo", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=600,
        env=_env(),
        cwd=data_dir,
    )
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    _story_only(r.stdout, r.stderr)
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
        log = tmp_path / f"run{run}" / "demo.log"
        assert f"logs: {log}" in out
        text = log.read_text()
        # The services did log (to the file), and nothing there is a traceback either.
        assert '"event": "service.started"' in text or '"service": "writer"' in text, text[:2000]
        assert "Traceback" not in text, text[-3000:]
    assert (tmp_path / "run1").is_dir() and (tmp_path / "run2").is_dir()


async def _statuses(urls: list[str]) -> dict[str, int]:
    async with aiohttp.ClientSession() as http:
        out = {}
        for url in urls:
            async with http.get(url) as resp:
                out[url] = resp.status
        return out


def test_the_printed_urls_answer_and_ctrl_c_stops_cleanly(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "demo", "--seconds", "300", "--data-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=tmp_path,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 300
    try:
        # Read the story up to the URL block (six lines after "Still running").
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "".join(lines)  # the demo ended before it printed its URLs
            lines.append(line)
            if len(lines) > 7 and "Still running" in lines[-7]:
                break
        urls = re.findall(r"\s(http://\S+)$", "".join(lines[-6:]), re.MULTILINE)
        assert len(urls) == 6 and any(u.endswith("/metrics") for u in urls), "".join(lines)
        assert asyncio.run(_statuses(urls)) == dict.fromkeys(urls, 200)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    _story_only("".join(lines) + out, err)
    assert "Traceback" not in (tmp_path / "run1" / "demo.log").read_text()


def test_ctrl_c_in_the_middle_of_the_story_stops_everything_cleanly(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "demo", "--data-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
        cwd=tmp_path,
    )
    assert proc.stdout is not None
    seen = b""
    try:
        # Raw reads: the step line is only finished (newline) once the step converged.
        while b"[1/6]" not in seen:
            chunk = os.read(proc.stdout.fileno(), 4096)
            assert chunk, seen.decode()
            seen += chunk
        proc.send_signal(signal.SIGINT)
        out_b, err_b = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    out, err = (seen + out_b).decode(), err_b.decode()
    assert proc.returncode == 130, out + err[-3000:]
    assert "exsf demo: interrupted, everything stopped cleanly." in out
    _story_only(out, err)
    assert "Traceback" not in (tmp_path / "run1" / "demo.log").read_text()
