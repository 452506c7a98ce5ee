"""`backchannel destination add|list|remove|test|retry-dead`: the CLI of `/v1/destinations`, on the store directly.

Each prints JSON (one object; `list` one per line). Credentials are sealed with BACKCHANNEL_ENCRYPTION_KEY, which must
be the gateway's, and are never printed; a webhook's signing secret is printed once, by `add`.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import msgspec

from gateway import settings as config
from gateway.forwarding import SIGNALS
from gateway.forwarding import destinations as dest
from gateway.forwarding.crypto import CredentialsError, Vault
from gateway.commands import project_or_exit, with_store
from gateway.store import Store
from gateway.store.outbox import StoredDestination


def _print(value: Any) -> None:
    print(json.dumps(msgspec.to_builtins(value)))


def _vault(settings: config.Settings) -> Vault:
    try:
        return Vault(settings.encryption_key)
    except CredentialsError as exc:
        raise SystemExit(f"backchannel: {exc}") from None


async def _find(store: Store, args: argparse.Namespace) -> StoredDestination:
    project_id = (await project_or_exit(store, args.project)).id if args.project else None
    found = await store.outbox.destination(project_id, args.id)
    if found is None:
        raise SystemExit(f"backchannel: no destination {args.id!r}" + (f" in {args.project}" if args.project else ""))
    return found


@with_store
async def cmd_add(args: argparse.Namespace, store: Store) -> int:
    needed = {"langfuse": ("public_key", "secret_key"), "posthog": ("api_key",), "webhook": ()}[args.kind]
    given = {name for name in ("public_key", "secret_key", "api_key") if getattr(args, name) is not None}
    if missing := [f"--{n.replace('_', '-')}" for n in needed if n not in given]:
        raise SystemExit(f"backchannel: --kind {args.kind} needs {' and '.join(missing)}")
    if extra := [f"--{n.replace('_', '-')}" for n in sorted(given - set(needed))]:
        raise SystemExit(f"backchannel: --kind {args.kind} takes no {', '.join(extra)}")
    fields = {"kind": args.kind, "url": args.url, **{n: getattr(args, n) for n in needed}}
    if args.signals is not None:
        fields["signals"] = args.signals.split(",")
    vault = _vault(config.from_options(args))
    try:
        new = msgspec.convert(fields, dest.NewDestination)
        url = dest.check_url(new.url)
        signals = dest.signals_of(new)
    except (msgspec.ValidationError, ValueError) as exc:
        raise SystemExit(f"backchannel: {exc}") from None
    project_id = (await project_or_exit(store, args.project)).id
    if len(await store.outbox.destinations(project_id)) >= dest.MAX_PER_PROJECT:
        raise SystemExit(f"backchannel: a project has at most {dest.MAX_PER_PROJECT} destinations")
    credentials, secret = dest.credentials_of(new)
    destination_id = await store.outbox.add(project_id, args.kind, url, signals, vault.seal(credentials))
    _print(dest.DestinationCreated(destination_id, args.kind, url, list(signals), secret))
    return 0


@with_store
async def cmd_list(args: argparse.Namespace, store: Store) -> int:
    project_id = (await project_or_exit(store, args.project)).id if args.project else None
    now = int(time.time() * 1000)
    for stored in await store.outbox.destinations(project_id):
        # In flight is known only to the gateway that delivers: null here.
        if (counts := await store.outbox.counts(stored.id)) is not None:  # else removed meanwhile
            _print(dest.shown(stored, counts, None, now))
    return 0


@with_store
async def cmd_remove(args: argparse.Namespace, store: Store) -> int:
    found = await _find(store, args)
    await store.outbox.remove(found.project_id, found.id)
    _print({"id": found.id, "removed": True})
    return 0


@with_store
async def cmd_retry_dead(args: argparse.Namespace, store: Store) -> int:
    found = await _find(store, args)
    _print({"id": found.id, "requeued": await store.outbox.retry_dead(found.project_id, found.id)})
    return 0


@with_store
async def cmd_test(args: argparse.Namespace, store: Store) -> int:
    found = await _find(store, args)
    settings = config.from_options(args)
    try:
        credentials = _vault(settings).open(found.credentials)
    except CredentialsError as exc:
        raise SystemExit(f"backchannel: {exc}") from None
    result = await dest.send_test(found, credentials, settings.forward_timeout_ms / 1000)
    _print(result)
    return 0 if result.status == "delivered" else 1


def add_commands(sub: Any) -> None:
    """`backchannel destination ...`, on the `backchannel` parser's subcommands."""
    parser = sub.add_parser("destination", help="forward signals to Langfuse, PostHog or a signed webhook")
    commands = parser.add_subparsers(dest="destination_command", required=True)

    add = commands.add_parser("add", help="add a destination; prints its id (and a webhook's signing secret, once)")
    add.add_argument("--project", required=True, help="public key (pk_...)")
    add.add_argument("--kind", required=True, choices=("langfuse", "posthog", "webhook"))
    add.add_argument("--url", required=True, help="Langfuse or PostHog base URL, or the webhook's URL")
    add.add_argument("--public-key", help="Langfuse public key (pk-lf-...)")
    add.add_argument("--secret-key", help="Langfuse secret key (sk-lf-...)")
    add.add_argument("--api-key", help="PostHog project API key (phc_...)")
    add.add_argument("--signals", help=f"comma-separated, from: {','.join(SIGNALS)}. Default: feedback")
    config.add_options(add, "db", "encryption_key")
    add.set_defaults(func=cmd_add)

    listing = commands.add_parser("list", help="destinations with their delivery counts (never credentials)")
    listing.add_argument("--project", help="public key (pk_...); without it, every project's")
    config.add_options(listing, "db")
    listing.set_defaults(func=cmd_list)

    for name, func, text in (("remove", cmd_remove, "remove a destination and what is queued for it"),
                             ("test", cmd_test, "send one marked test event now; exit 1 unless delivered"),
                             ("retry-dead", cmd_retry_dead, "requeue the destination's dead records")):
        command = commands.add_parser(name, help=text)
        command.add_argument("id", help="destination id (dst_...)")
        command.add_argument("--project", help="public key (pk_...): refuse unless the destination is this project's")
        config.add_options(command, "db", *(("encryption_key", "forward_timeout_ms") if name == "test" else ()))
        command.set_defaults(func=func)
