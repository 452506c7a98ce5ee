"""The `backchannel` command, run as a real process."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

from gateway import tokens


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=60,
                          check=check)


def test_project_create_prints_keys_once_and_stores_only_a_hash(tmp_path):
    db = str(tmp_path / "bc.db")
    out = json.loads(run("project", "create", "--name", "shop", "--origin", "https://a.example",
                         "--origin", "https://b.example/", "--db", db).stdout)
    assert out["public_key"].startswith("pk_") and out["secret_key"].startswith("sk_")
    assert out["origins"] == ["https://a.example", "https://b.example"] and out["require_token"] is True
    dump = "\n".join(sqlite3.connect(db).iterdump())
    assert out["secret_key"] not in dump
    assert tokens.secret_hash(out["secret_key"]) in dump
    listed = [json.loads(line) for line in run("project", "list", "--db", db).stdout.splitlines()]
    assert [p["public_key"] for p in listed] == [out["public_key"]]
    assert "secret_key" not in listed[0] and out["secret_key"] not in run("project", "list", "--db", db).stdout


def test_no_require_token_flag(tmp_path):
    db = str(tmp_path / "bc.db")
    out = json.loads(run("project", "create", "--name", "x", "--origin", "*", "--no-require-token", "--db", db).stdout)
    assert out["require_token"] is False


def test_token_command_matches_the_gateway(tmp_path):
    db = str(tmp_path / "bc.db")
    out = json.loads(run("project", "create", "--name", "x", "--origin", "*", "--db", db).stdout)
    token = run("token", "--secret", out["secret_key"], "--trace-id", "t1", "--session-id", "s1", "--token-ttl", "60",
                "--db", db).stdout.strip()
    parsed = tokens.parse(token)
    claims = tokens.verify(parsed, tokens.token_key(out["secret_key"]), public_key=out["public_key"], trace_id="t1")
    assert claims.s == "s1"
    unknown = run("token", "--secret", "sk_nope", "--trace-id", "t", "--session-id", "s", "--db", db, check=False)
    assert unknown.returncode == 1 and "no project" in unknown.stderr


def test_bad_setting_is_a_clear_error_not_a_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "gateway", "project", "list", "--db", str(tmp_path / "x.db")],
                            capture_output=True, text=True, env={"BACKCHANNEL_PORT": "x", "PATH": ""}, timeout=60)
    assert result.returncode == 2 and "BACKCHANNEL_PORT" in result.stderr and "Traceback" not in result.stderr


def test_key_rotation_add_then_revoke(tmp_path):
    from tests.servers import GatewayProcess
    import httpx

    db = str(tmp_path / "bc.db")
    out = json.loads(run("project", "create", "--name", "x", "--origin", "*", "--db", db).stdout)
    old_kid = tokens.key_id(out["secret_key"])
    new = json.loads(run("project", "add-key", "--project", out["public_key"], "--db", db).stdout)
    assert new["secret_key"] != out["secret_key"] and new["kid"] == tokens.key_id(new["secret_key"])
    listed = json.loads(run("project", "list", "--db", db).stdout)
    assert [k["kid"] for k in listed["keys"]] == [old_kid, new["kid"]]
    revoked = run("project", "revoke-key", "--project", out["public_key"], "--kid", old_kid, "--db", db)
    assert json.loads(revoked.stdout)["revoked"] == old_kid
    again = run("project", "revoke-key", "--project", out["public_key"], "--kid", old_kid, "--db", db, check=False)
    assert again.returncode == 1 and "no live key" in again.stderr

    gateway = GatewayProcess(db)
    gateway.start()
    try:
        old_auth = {"Authorization": f"Bearer {out['secret_key']}"}
        new_auth = {"Authorization": f"Bearer {new['secret_key']}"}
        body = {"trace_id": "t1", "session_id": "s1"}
        assert httpx.post(gateway.url + "/v1/traces", json=body, headers=old_auth).status_code == 401
        fresh = httpx.post(gateway.url + "/v1/traces", json=body, headers=new_auth).json()["feedback_token"]
        stale = run("token", "--secret", out["secret_key"], "--trace-id", "t1", "--session-id", "s1",
                    "--project", out["public_key"]).stdout.strip()
        events = [{"id": str(__import__("uuid").uuid4()), "type": "shown", "trace_id": "t1", "ts": 1, "token": t}
                  for t in (fresh, stale)]
        results = httpx.post(gateway.url + "/v1/events", json={"project": out["public_key"], "events": events},
                             headers={"Origin": "https://any.example"}).json()["results"]
        assert [r.get("error") for r in results] == [None, "invalid_token"]
    finally:
        gateway.stop()


async def test_the_demo_project_is_seeded_once_and_its_keys_read_back(tmp_path):
    from gateway.demo import seed_project
    from gateway.settings import Settings

    settings = Settings.load({}, db=str(tmp_path / "demo.db"))
    first = await seed_project(settings, ["http://127.0.0.1:8001"])
    assert await seed_project(settings, ["http://127.0.0.1:8001"]) == first  # the same project, from the key file
    (tmp_path / "demo.db").unlink()  # the key file outlives its database: a new project, new keys
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"demo.db{suffix}").unlink(missing_ok=True)
    assert (await seed_project(settings, ["http://127.0.0.1:8001"]))[0] != first[0]
