"""`backchannel demo`: the gateway and the demo chat app in one process, on the embedded store, with a seeded project."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from pathlib import Path

import uvicorn

from gateway import settings as config
from gateway.demo_history import seed_history
from gateway.server import tune_gc, uvicorn_config
from gateway.settings import Settings
from gateway.store import create_store

log = logging.getLogger("backchannel.demo")


class _Server(uvicorn.Server):
    """A uvicorn server whose signals are handled by `run_demo`, which stops both servers together."""

    def capture_signals(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()


async def seed_project(settings: Settings, origins: list[str]) -> tuple[str, str]:
    """The demo project's keys: created once, with two weeks of simulated history (`gateway/demo_history.py`), then
    read back from a key file beside the database (mode 0600)."""
    key_file = Path(settings.db + ".demo-keys.json")
    store = create_store(settings)  # with the writer process: the seeded history rides a few group commits
    await store.open()
    try:
        if key_file.exists():
            keys = json.loads(key_file.read_text())
            if await store.project_by_public_key(keys["public_key"]) is not None:
                return keys["public_key"], keys["secret_key"]
        project, secret = await store.create_project(name="demo", origins=origins)
        traces, events = await seed_history(store, project.id, int(time.time()) // 3600 * 3600)
        log.info("seeded the demo project with %d traces and %d events of simulated history", traces, events)
    finally:
        await store.close()
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"public_key": project.public_key, "secret_key": secret}, f)
    return project.public_key, secret


def run_demo(args: argparse.Namespace) -> int:
    from demo_app.app import create_app as create_demo_app
    from gateway.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = config.from_options(args)
    gateway_url = f"http://{settings.host}:{settings.port}"
    demo_origins = [f"http://{host}:{args.demo_port}" for host in {settings.host, "127.0.0.1", "localhost"}]
    public_key, secret_key = asyncio.run(seed_project(settings, demo_origins))
    gateway = _Server(uvicorn_config(create_app(settings), host=settings.host, port=settings.port, log_level="warning",
                                     settings=settings))
    demo = _Server(uvicorn_config(create_demo_app(gateway_url=gateway_url, public_key=public_key,
                                                  secret_key=secret_key),
                                  host=settings.host, port=args.demo_port, log_level="warning", fast=False))
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
            demo_url = f"http://{settings.host}:{args.demo_port}/"
            if args.json:
                print(json.dumps({"gateway_url": gateway_url, "demo_url": demo_url, "public_key": public_key,
                                  "secret_key": secret_key, "dashboard_url": f"{gateway_url}/dashboard"}), flush=True)
            else:
                print(f"\nBackchannel demo is running.\n  Open the chat:  {demo_url}\n  Gateway:        {gateway_url}"
                      f"\n  Public key:     {public_key}\n  Dashboard:      {gateway_url}/dashboard"
                      f"\n  Secret key:     {secret_key}  (sign in to the dashboard with it)"
                      f"\n  Database:       {settings.db}\nPress Ctrl+C to stop.\n",
                      flush=True)
        await asyncio.gather(*tasks)
        if not (gateway.started and demo.started):
            raise SystemExit(1)

    asyncio.run(main())
    return 0
