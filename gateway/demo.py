"""`backchannel demo`: the gateway and the demo chat app in one process, on the embedded store, with a seeded project."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
from pathlib import Path

import uvicorn

from gateway.cli import tune_gc
from gateway.server import http_protocol
from gateway.settings import Settings
from gateway.store import tables

log = logging.getLogger("backchannel.demo")


class _Server(uvicorn.Server):
    """A uvicorn server whose signals are handled by `run_demo`, which stops both servers together."""

    def install_signal_handlers(self) -> None:  # uvicorn < 0.29
        pass

    def capture_signals(self):  # uvicorn >= 0.29
        import contextlib

        return contextlib.nullcontext()


def seed_project(db: str, origins: list[str]) -> tuple[str, str]:
    """The demo project's keys: created once, then read back from a key file beside the database (mode 0600)."""
    key_file = Path(db + ".demo-keys.json")
    conn = tables.connect(db)
    try:
        if key_file.exists():
            keys = json.loads(key_file.read_text())
            if tables.project_by_public_key(conn, keys["public_key"]) is not None:
                return keys["public_key"], keys["secret_key"]
        conn.execute("BEGIN IMMEDIATE")
        project, secret = tables.create_project(conn, name="demo", origins=origins)
        conn.execute("COMMIT")
    finally:
        conn.close()
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"public_key": project.public_key, "secret_key": secret}, f)
    return project.public_key, secret


def run_demo(args: argparse.Namespace) -> int:
    from demo_app.app import create_app as create_demo_app
    from gateway.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    gateway_url = f"http://{args.host}:{args.port}"
    demo_origins = [f"http://{host}:{args.demo_port}" for host in {args.host, "127.0.0.1", "localhost"}]
    public_key, secret_key = seed_project(args.db, demo_origins)
    settings = Settings.load(host=args.host, port=args.port, db=args.db, redis=args.redis)
    gateway = _Server(uvicorn.Config(create_app(settings), host=args.host, port=args.port, log_level="warning",
                                     access_log=False, server_header=False, http=http_protocol()))
    demo = _Server(uvicorn.Config(
        create_demo_app(gateway_url=gateway_url, public_key=public_key, secret_key=secret_key),
        host=args.host, port=args.demo_port, log_level="warning", access_log=False, server_header=False))

    tune_gc()

    async def main() -> None:
        loop = asyncio.get_running_loop()

        def stop() -> None:
            gateway.should_exit = demo.should_exit = True

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop)
        tasks = [asyncio.create_task(gateway.serve()), asyncio.create_task(demo.serve())]
        while not (gateway.started and demo.started):
            if any(t.done() for t in tasks):  # one failed to start (port taken?): stop the other too
                stop()
                break
            await asyncio.sleep(0.05)
        else:
            demo_url = f"http://{args.host}:{args.demo_port}/"
            if args.json:
                print(json.dumps({"gateway_url": gateway_url, "demo_url": demo_url, "public_key": public_key,
                                  "secret_key": secret_key}), flush=True)
            else:
                print(f"\nBackchannel demo is running.\n  Open the chat:  {demo_url}\n  Gateway:        {gateway_url}"
                      f"\n  Public key:     {public_key}\n  Database:       {args.db}\nPress Ctrl+C to stop.\n",
                      flush=True)
        await asyncio.gather(*tasks)
        if not (gateway.started and demo.started):
            raise SystemExit(1)

    asyncio.run(main())
    return 0
