"""The `backchannel` command: serve, project create/list, token, demo."""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import sys
from typing import Any, Iterator, Sequence

import uvicorn

from gateway import tokens
from gateway.settings import Settings
from gateway.store import Project
from gateway.store import tables


def _project_json(project: Project, **extra: Any) -> dict[str, Any]:
    return {"name": project.name, "public_key": project.public_key, **extra, "origins": list(project.origins),
            "require_token": project.require_token, "delay_ms": project.delay_ms, "created_at": project.created_at}


@contextlib.contextmanager
def _transaction(db: str) -> Iterator[Any]:
    conn = tables.connect(db)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    finally:
        conn.close()


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.load(**{k: getattr(args, k, None) for k in ("host", "port", "db", "redis")})


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway.app import create_app
    from gateway.server import http_protocol

    settings = _settings(args)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    tune_gc()
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level, access_log=False,
                server_header=False, http=http_protocol())
    return 0


def tune_gc() -> None:
    """Collect cyclic garbage less often: a request allocates many short-lived objects and almost no cycles, and at
    the default threshold the collector cost ~10% of the ingest path (measured with bench/run.py). Objects alive at
    start-up (modules, the app) are frozen out of every collection."""
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


def cmd_project_create(args: argparse.Namespace) -> int:
    settings = _settings(args)
    with _transaction(settings.db) as conn:
        project, secret = tables.create_project(conn, name=args.name, origins=args.origin,
                                                      require_token=not args.no_require_token)
    print(json.dumps(_project_json(project, secret_key=secret)))
    return 0


def cmd_project_list(args: argparse.Namespace) -> int:
    conn = tables.connect(_settings(args).db)
    try:
        for project in tables.list_projects(conn):
            print(json.dumps(_project_json(project, keys=tables.key_ids(conn, project.id))))
    finally:
        conn.close()
    return 0


def _project_or_exit(conn: Any, public_key: str) -> Project:
    project = tables.project_by_public_key(conn, public_key)
    if project is None:
        raise SystemExit(f"backchannel: no project has public key {public_key!r}")
    return project


def cmd_project_add_key(args: argparse.Namespace) -> int:
    with _transaction(_settings(args).db) as conn:
        project = _project_or_exit(conn, args.project)
        secret = tables.add_secret_key(conn, project.id)
    print(json.dumps({"public_key": project.public_key, "secret_key": secret, "kid": tokens.key_id(secret)}))
    return 0


def cmd_project_revoke_key(args: argparse.Namespace) -> int:
    with _transaction(_settings(args).db) as conn:
        project = _project_or_exit(conn, args.project)
        if not tables.revoke_secret_key(conn, project.id, args.kid):
            raise SystemExit(f"backchannel: project {args.project} has no live key {args.kid!r}")
    print(json.dumps({"public_key": project.public_key, "revoked": args.kid}))
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    settings = _settings(args)
    public_key = args.project
    if public_key is None:
        conn = tables.connect(settings.db)
        try:
            row = conn.execute("SELECT p.public_key FROM secret_keys k JOIN projects p ON p.id = k.project_id"
                               " WHERE k.secret_hash = ?", (tokens.secret_hash(args.secret),)).fetchone()
        finally:
            conn.close()
        if row is None:
            print(f"no project in {settings.db} has this secret key; pass --project pk_... to mint offline",
                  file=sys.stderr)
            return 1
        public_key = row[0]
    token, _ = tokens.mint(args.secret, public_key=public_key, trace_id=args.trace_id, session_id=args.session_id,
                           ttl=args.ttl if args.ttl is not None else settings.token_ttl)
    print(token)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    return run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="backchannel", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def db_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--db", help="SQLite database path (BACKCHANNEL_DB)")

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--host", help="bind address (BACKCHANNEL_HOST)")
    serve.add_argument("--port", type=int, help="port (BACKCHANNEL_PORT)")
    db_option(serve)
    serve.add_argument("--redis", help="Redis URL for shared limits and de-dup (BACKCHANNEL_REDIS)")
    serve.set_defaults(func=cmd_serve)

    project = sub.add_parser("project", help="manage projects").add_subparsers(dest="project_command", required=True)
    create = project.add_parser("create", help="create a project; prints its keys once")
    create.add_argument("--name", required=True)
    create.add_argument("--origin", action="append", required=True,
                        help="allowed browser origin, e.g. https://chat.example.com (repeatable; * allows any)")
    create.add_argument("--no-require-token", action="store_true",
                        help="accept events without a feedback token (they must carry session_id)")
    db_option(create)
    create.set_defaults(func=cmd_project_create)
    listing = project.add_parser("list", help="list projects (never their secret keys)")
    db_option(listing)
    listing.set_defaults(func=cmd_project_list)
    add_key = project.add_parser("add-key", help="add a secret key (rotation: add, deploy it, then revoke the old)")
    add_key.add_argument("--project", required=True, help="public key (pk_...)")
    db_option(add_key)
    add_key.set_defaults(func=cmd_project_add_key)
    revoke = project.add_parser("revoke-key", help="revoke a secret key and every token minted with it")
    revoke.add_argument("--project", required=True, help="public key (pk_...)")
    revoke.add_argument("--kid", required=True, help="key id, as `project list` shows it")
    db_option(revoke)
    revoke.set_defaults(func=cmd_project_revoke_key)

    token = sub.add_parser("token", help="mint a feedback token")
    token.add_argument("--secret", required=True, help="the project's secret key (sk_...)")
    token.add_argument("--trace-id", required=True)
    token.add_argument("--session-id", required=True)
    token.add_argument("--ttl", type=int, help="lifetime in seconds (BACKCHANNEL_TOKEN_TTL)")
    token.add_argument("--project", help="public key; without it, looked up in --db by the secret key")
    db_option(token)
    token.set_defaults(func=cmd_token)

    demo = sub.add_parser("demo", help="run the gateway and the demo chat app with a seeded project")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000, help="gateway port")
    demo.add_argument("--demo-port", type=int, default=8001, help="demo chat app port")
    demo.add_argument("--db", default="backchannel-demo.db")
    demo.add_argument("--redis", help="Redis URL (optional)")
    demo.add_argument("--json", action="store_true", help="print one JSON line with the URLs and keys once ready")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as exc:  # bad settings: say which, no traceback
        print(f"backchannel: {exc}", file=sys.stderr)
        return 2
