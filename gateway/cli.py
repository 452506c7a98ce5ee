"""The `backchannel` command: serve, project create/list/add-key/revoke-key, token, demo."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from typing import Any, Sequence

from gateway import settings as config
from gateway import alert_commands, tokens
from gateway.analytics.backtest import add_drift_parser
from gateway.commands import project_or_exit, with_store
from gateway.forwarding import commands as forwarding_commands
from gateway.review import commands as review_commands
from gateway.store import Project, Store


def _project_json(project: Project, **extra: Any) -> dict[str, Any]:
    return {"name": project.name, "public_key": project.public_key, **extra, "origins": list(project.origins),
            "require_token": project.require_token, "delay_ms": project.delay_ms, "created_at": project.created_at}


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.app import create_app
    from gateway.server import raise_open_files_limit, tune_gc, uvicorn_config

    settings = config.from_options(args)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every request it sends (alert webhooks) at INFO, URL and all: a line per delivery is noise, and a
    # webhook's URL may carry a token.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))
    raise_open_files_limit()
    server = uvicorn.Server(uvicorn_config(create_app(settings), host=settings.host, port=settings.port,
                                           log_level=settings.log_level, settings=settings))
    tune_gc()
    server.run()
    return 0 if server.started else 3  # as uvicorn.run: 3 is a failed start-up


@with_store
async def cmd_project_create(args: argparse.Namespace, store: Store) -> int:
    project, secret = await store.create_project(name=args.name, origins=args.origin,
                                                 require_token=not args.no_require_token)
    print(json.dumps(_project_json(project, secret_key=secret)))
    return 0


@with_store
async def cmd_project_list(args: argparse.Namespace, store: Store) -> int:
    for project in await store.list_projects():
        keys = [dataclasses.asdict(key) for key in await store.keys_of(project.id)]
        print(json.dumps(_project_json(project, keys=keys)))
    return 0


@with_store
async def cmd_project_add_key(args: argparse.Namespace, store: Store) -> int:
    project = await project_or_exit(store, args.project)
    secret = await store.add_secret_key(project.id)
    print(json.dumps({"public_key": project.public_key, "secret_key": secret, "kid": tokens.key_id(secret)}))
    return 0


@with_store
async def cmd_project_revoke_key(args: argparse.Namespace, store: Store) -> int:
    project = await project_or_exit(store, args.project)
    if not await store.revoke_secret_key(project.id, args.kid):
        raise SystemExit(f"backchannel: project {args.project} has no live key {args.kid!r}")
    print(json.dumps({"public_key": project.public_key, "revoked": args.kid}))
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    settings = config.from_options(args)
    public_key = args.project
    if public_key is None:
        public_key = with_store(_public_key_of_secret)(args)
        if public_key is None:
            print(f"no project in {settings.db} has this secret key; pass --project pk_... to mint offline",
                  file=sys.stderr)
            return 1
    token, _ = tokens.mint(args.secret, public_key=public_key, trace_id=args.trace_id, session_id=args.session_id,
                           ttl=settings.token_ttl)
    print(token)
    return 0


async def _public_key_of_secret(args: argparse.Namespace, store: Store) -> Any:
    key = await store.key_by_secret(args.secret)
    project = await store.project_by_id(key.project_id) if key is not None else None
    return project.public_key if project is not None else None


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    return run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="backchannel", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway (every setting is an option)")
    config.add_options(serve)
    serve.set_defaults(func=cmd_serve)

    project = sub.add_parser("project", help="manage projects").add_subparsers(dest="project_command", required=True)
    create = project.add_parser("create", help="create a project; prints its keys once")
    create.add_argument("--name", required=True)
    create.add_argument("--origin", action="append", required=True,
                        help="allowed browser origin, e.g. https://chat.example.com (repeatable; * allows any)")
    create.add_argument("--no-require-token", action="store_true",
                        help="accept events without a feedback token (they must carry session_id)")
    config.add_options(create, "db")
    create.set_defaults(func=cmd_project_create)
    listing = project.add_parser("list", help="list projects (never their secret keys)")
    config.add_options(listing, "db")
    listing.set_defaults(func=cmd_project_list)
    add_key = project.add_parser("add-key", help="add a secret key (rotation: add, deploy it, then revoke the old)")
    add_key.add_argument("--project", required=True, help="public key (pk_...)")
    config.add_options(add_key, "db")
    add_key.set_defaults(func=cmd_project_add_key)
    revoke = project.add_parser("revoke-key", help="revoke a secret key and every token minted with it")
    revoke.add_argument("--project", required=True, help="public key (pk_...)")
    revoke.add_argument("--kid", required=True, help="key id, as `project list` shows it")
    config.add_options(revoke, "db")
    revoke.set_defaults(func=cmd_project_revoke_key)
    alert_commands.add_commands(project)

    token = sub.add_parser("token", help="mint a feedback token")
    token.add_argument("--secret", required=True, help="the project's secret key (sk_...)")
    token.add_argument("--trace-id", required=True)
    token.add_argument("--session-id", required=True)
    token.add_argument("--project", help="public key; without it, looked up in --db by the secret key")
    config.add_options(token, "token_ttl", "db")
    token.set_defaults(func=cmd_token)

    demo = sub.add_parser("demo", help="run the gateway and the demo chat app with a seeded project")
    config.add_options(demo, "host", "port", "db", "redis", db="backchannel-demo.db")
    demo.add_argument("--demo-port", type=int, default=8001, help="demo chat app port")
    demo.add_argument("--json", action="store_true", help="print one JSON line with the URLs and keys once ready")
    demo.set_defaults(func=cmd_demo)
    forwarding_commands.add_commands(sub)
    review_commands.add_commands(sub)
    add_drift_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as exc:  # bad settings: say which, no traceback
        print(f"backchannel: {exc}", file=sys.stderr)
        return 2
