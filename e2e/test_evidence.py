"""A failed browser test leaves its evidence in test-artifacts/<test id>/, and a run leaves no temporary files:
proven on e2e/samples/failing.py, run in a subprocess with its own output folder and its own TMPDIR."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from e2e.stack import split_log

ROOT = Path(__file__).resolve().parent.parent


def test_a_failed_test_leaves_every_artifact_and_no_temporary_files():
    with tempfile.TemporaryDirectory(prefix="bc-evidence-") as workdir:
        check(Path(workdir, "artifacts"), Path(workdir, "tmp"))


def check(out: Path, tmp: Path) -> None:
    tmp.mkdir()
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "e2e/samples/failing.py", "-p", "no:cacheprovider", f"--output={out}", "-q",
         "--video=retain-on-failure"],
        cwd=ROOT, env={**os.environ, "TMPDIR": str(tmp)}, capture_output=True, text=True, timeout=240)
    assert run.returncode == 1 and "1 failed, 1 passed" in run.stdout, run.stdout + run.stderr

    [folder] = list(out.iterdir())  # the passing test keeps nothing
    assert folder.name == "e2e-samples-failing-py-test-fails-chromium"
    files = {p.name for p in folder.iterdir()}
    assert files == {"test-failed-1.png", "trace.zip", "video.webm", "page.html", "console.log", "gateway.log",
                     "demo.log"}
    assert (folder / "test-failed-1.png").read_bytes().startswith(b"\x89PNG")
    assert (folder / "video.webm").read_bytes().startswith(b"\x1a\x45\xdf\xa3")  # EBML: a WebM file
    with zipfile.ZipFile(folder / "trace.zip") as trace:  # what `playwright show-trace` opens
        assert "trace.trace" in trace.namelist() and "trace.network" in trace.namelist()
    assert "<title>Quill" in (folder / "page.html").read_text()
    assert "log: the sample test was here" in (folder / "console.log").read_text()
    assert "POST http://127.0.0.1" in (folder / "demo.log").read_text()  # the demo logging this test's trace
    secret = "sk_"
    assert not any(secret in p.read_text(errors="replace") for p in folder.iterdir() if p.suffix not in (".zip", ".webm"))

    # Nothing left in the temporary directory: no bc-e2e-* (database, log, key file), no bc-redis-*.
    assert sorted(p.name for p in tmp.iterdir()) == []


def test_the_process_log_splits_into_the_gateway_and_the_demo():
    log = ("2026-01-01 12:00:00,001 WARNING demo_app: trace t not logged\n"
           "2026-01-01 12:00:00,002 ERROR backchannel.writer: commit failed\n"
           "Traceback (most recent call last):\n"
           "  ValueError: boom\n"
           "2026-01-01 12:00:00,003 INFO httpx: HTTP Request: POST http://127.0.0.1:1/v1/traces\n"
           "2026-01-01 12:00:00,004 ERROR uvicorn.error: Exception in ASGI application\n")
    lines = log.splitlines(keepends=True)
    assert split_log(log) == {"gateway": "".join(lines[1:4] + lines[5:]), "demo": "".join([lines[0], *lines[4:]])}
