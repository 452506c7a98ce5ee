"""The store's files deleted or replaced under a running gateway: it goes unready and stops acknowledging, and what it
acknowledged before is not lost. A real gateway process, its real files."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import httpx
import pytest

from gateway.store.files import StoreFiles
from tests.events import event
from tests.servers import GatewayProcess, wait_for
from tests.test_faults import ORIGIN, create_project, log_trace, stored_ids


def remove_wal(db: str) -> None:
    os.unlink(db + "-wal")


def replace_db(db: str) -> None:
    shutil.copy(db, db + ".copy")
    os.replace(db + ".copy", db)


def replace_wal(db: str) -> None:
    shutil.copy(db + "-wal", db + "-wal.copy")
    os.replace(db + "-wal.copy", db + "-wal")


@pytest.mark.parametrize("change", [remove_wal, replace_db, replace_wal])
def test_replaced_store_files_make_the_gateway_unready_and_refuse_writes(tmp_path, change):
    db = str(tmp_path / "bc.db")
    keys = create_project(db)
    gateway = GatewayProcess(Path(db), env={"BACKCHANNEL_LIMIT_SESSION": "1000/s burst 2000"})
    gateway.start()
    acknowledged: list[str] = []
    try:
        token = log_trace(gateway.url, keys["secret_key"], "t1")
        with httpx.Client(timeout=10) as http:
            def send() -> httpx.Response:
                batch = [event(trace_id="t1", token=token) for _ in range(20)]
                response = http.post(f"{gateway.url}/v1/events", json={"project": keys["public_key"],
                                                                         "events": batch}, headers={"Origin": ORIGIN})
                if response.status_code == 200:
                    acknowledged.extend(r["id"] for r in response.json()["results"] if r["status"] == "accepted")
                return response

            for _ in range(10):
                assert send().status_code == 200
            assert http.get(f"{gateway.url}/readyz").status_code == 200
            change(db)
            wait_for(lambda: http.get(f"{gateway.url}/readyz").status_code == 503, what="/readyz 503")
            for _ in range(5):
                response = send()
                assert response.status_code == 503, response.text
                assert response.json()["type"] == "urn:backchannel:problem:store_unavailable"
            log_trace_status = http.post(f"{gateway.url}/v1/traces", json={"trace_id": "t2", "session_id": "s"},
                                         headers={"Authorization": f"Bearer {keys['secret_key']}"}).status_code
            assert log_trace_status == 503
    finally:
        gateway.kill()  # SIGKILL: no orderly close to save what only a running process holds
    assert len(acknowledged) == 200
    if change is remove_wal:  # (a file put in place of ours is the operator's: it holds what they copied)
        assert set(acknowledged) <= set(stored_ids(db))
    assert "Traceback" not in Path(gateway.log.name).read_text()


def test_store_files_name_what_changed(tmp_path):
    db = str(tmp_path / "bc.db")
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE t (x)")
    files = StoreFiles(db)
    assert files.problem() is None
    replace_wal(db)
    assert files.problem() == f"{db}-wal was replaced while the gateway had it open"
    remove_wal(db)
    assert files.problem() == f"{db}-wal was removed while the gateway had it open"
    conn.close()
