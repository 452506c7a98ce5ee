"""`backchannel project set-alert-webhook | remove-alert-webhook`: where a project's new drift alerts are POSTed.

The signing secret (Standard Webhooks, `whsec_...`) is made here, printed once, and stored sealed with
BACKCHANNEL_ENCRYPTION_KEY, which must be the gateway's (it opens the secret to sign each delivery).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from gateway import settings as config
from gateway.commands import project_or_exit, with_store
from gateway.forwarding import WebhookSecret
from gateway.forwarding.crypto import CredentialsError, Vault
from gateway.forwarding.destinations import check_url
from gateway.forwarding.webhook import new_secret
from gateway.store import Store


async def _set(args: argparse.Namespace, store: Store) -> int:
    try:
        url = check_url(args.url)
        vault = Vault(config.from_options(args).encryption_key)
    except (ValueError, CredentialsError) as exc:
        raise SystemExit(f"backchannel: {exc}") from None
    project_id = (await project_or_exit(store, args.project)).id
    secret = new_secret()
    await store.alerts.set_webhook(project_id, url, vault.seal(WebhookSecret(secret=secret)))
    print(json.dumps({"public_key": args.project, "url": url, "signing_secret": secret}))
    return 0


async def _remove(args: argparse.Namespace, store: Store) -> int:
    if not await store.alerts.remove_webhook((await project_or_exit(store, args.project)).id):
        raise SystemExit(f"backchannel: project {args.project} has no alert webhook")
    print(json.dumps({"public_key": args.project, "removed": True}))
    return 0


def add_commands(project: Any) -> None:
    """Add the alert webhook's subcommands to `backchannel project`'s subparsers."""
    set_hook = project.add_parser("set-alert-webhook", help="POST each new drift alert to URL, signed (Standard "
                                  "Webhooks); prints the signing secret once")
    set_hook.add_argument("--project", required=True, help="public key (pk_...)")
    set_hook.add_argument("--url", required=True, help="http(s) URL that receives the alerts")
    config.add_options(set_hook, "db", "encryption_key")
    set_hook.set_defaults(func=with_store(_set))
    remove = project.add_parser("remove-alert-webhook", help="stop POSTing the project's drift alerts")
    remove.add_argument("--project", required=True, help="public key (pk_...)")
    config.add_options(remove, "db")
    remove.set_defaults(func=with_store(_remove))
