"""`backchannel reviewer add|revoke|list`, `backchannel labels show|set` and `backchannel export evals|preferences`:
the review loop's CLI, on the store directly. Each prints JSON; an export writes its file and a progress bar (stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Callable

import msgspec
from tqdm import tqdm

from gateway import settings as config
from gateway.exports.formats import PREFERENCE_FORMATS
from gateway.exports.stream import eval_stream, preference_stream
from gateway.review.queues import Label, parse_time
from gateway.commands import project_or_exit, with_store
from gateway.store import Store

def add_commands(sub: argparse._SubParsersAction) -> None:
    """The subcommands, each run by `with_store` (the store the settings name, in command mode)."""

    async def reviewer_add(args: argparse.Namespace, store: Store) -> int:
        project = await project_or_exit(store, args.project)
        key = await store.review.add_reviewer(project.id, args.name, _now())
        if key is None:
            raise SystemExit(f"backchannel: project {args.project} already has a reviewer named {args.name!r}"
                             " (revoke it first)")
        print(json.dumps({"reviewer_key": key, "name": args.name}))
        return 0

    async def reviewer_revoke(args: argparse.Namespace, store: Store) -> int:
        project = await project_or_exit(store, args.project)
        if not await store.review.revoke_reviewer(project.id, args.name, _now()):
            raise SystemExit(f"backchannel: project {args.project} has no live reviewer named {args.name!r}")
        print(json.dumps({"revoked": args.name}))
        return 0

    async def reviewer_list(args: argparse.Namespace, store: Store) -> int:
        project = await project_or_exit(store, args.project)
        for found in await store.review.reviewers_of(project.id):
            print(json.dumps({"name": found.name, "created_at": found.created_at, "revoked_at": found.revoked_at}))
        return 0

    async def labels_show(args: argparse.Namespace, store: Store) -> int:
        project = await project_or_exit(store, args.project)
        print(json.dumps({"labels": await store.review.labels_of(project.id)}))
        return 0

    async def labels_set(args: argparse.Namespace, store: Store) -> int:
        project = await project_or_exit(store, args.project)
        labels = list(dict.fromkeys(args.label))
        print(json.dumps({"labels": await store.review.set_labels(project.id, labels)}))
        return 0

    async def export(args: argparse.Namespace, store: Store) -> int:
        project = await project_or_exit(store, args.project)
        since, until = _time(args.since), _time(args.until)
        min_votes = config.from_options(args).outlier_min_votes
        if args.dataset == "evals":
            if args.queue is not None and await store.review.queue_by_id(project.id, args.queue) is None:
                raise SystemExit(f"backchannel: project {args.project} has no queue {args.queue!r}")
            total = await store.review.count_eval_traces(project.id, args.queue)
            lines = eval_stream(store.review, project.id, queue_id=args.queue, since=since, until=until,
                                min_votes=min_votes)
        else:
            total = None  # pairs are only known as they are made
            lines = preference_stream(store.review, project.id, args.format, since=since, until=until,
                                      min_votes=min_votes)
        written = await _write(lines, args.out, total)
        print(json.dumps({"out": args.out, "lines": written}))
        return 0

    reviewer = sub.add_parser("reviewer", help="manage reviewer keys (they claim, read, label and skip queue items)"
                              ).add_subparsers(dest="reviewer_command", required=True)
    _command(reviewer, "add", "add a reviewer; prints its key once (stored hashed)", with_store(reviewer_add),
             name=True)
    _command(reviewer, "revoke", "revoke a reviewer's key", with_store(reviewer_revoke), name=True)
    _command(reviewer, "list", "list a project's reviewers (never their keys)", with_store(reviewer_list))

    labels = sub.add_parser("labels", help="a project's label taxonomy for reviewers"
                            ).add_subparsers(dest="labels_command", required=True)
    _command(labels, "show", "print the project's labels", with_store(labels_show))
    setting = _command(labels, "set", "replace the project's labels", with_store(labels_set))
    setting.add_argument("--label", action="append", required=True, type=_label,
                         help="a label: lower-case letters, digits and _ (repeatable, in order)")

    exports = sub.add_parser("export", help="write a dataset as NDJSON (a progress bar on stderr)"
                             ).add_subparsers(dest="dataset", required=True)
    evals = _command(exports, "evals", "one line per labeled trace", with_store(export))
    evals.add_argument("--queue", help="only the labels of this queue (q_...)")
    preferences = _command(exports, "preferences", "preference pairs (or single votes for trl_unpaired)",
                           with_store(export))
    preferences.add_argument("--format", choices=list(PREFERENCE_FORMATS), default="trl")
    for parser in (evals, preferences):
        parser.add_argument("--since", help="traces from (ISO 8601, ms, or a duration such as 30d)")
        parser.add_argument("--until", help="traces before (ISO 8601, ms, or a duration)")
        parser.add_argument("--out", required=True, help="the file to write")


def _command(parent: argparse._SubParsersAction, command: str, help: str, run: Callable[[argparse.Namespace], int],
             *, name: bool = False) -> argparse.ArgumentParser:
    parser = parent.add_parser(command, help=help)
    parser.add_argument("--project", required=True, help="public key (pk_...)")
    if name:
        parser.add_argument("--name", required=True, help="the reviewer's name, as labels and agreement show it")
    config.add_options(parser, "db")
    parser.set_defaults(func=run)
    return parser


def _now() -> int:
    return int(time.time() * 1000)


def _label(text: str) -> str:
    try:
        return msgspec.convert(text, Label)
    except msgspec.ValidationError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a label: lower-case letters, digits and _") from None


def _time(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return parse_time(int(text) if text.isdigit() else text, _now())
    except ValueError as exc:
        raise SystemExit(f"backchannel: {exc}") from None


async def _write(lines: AsyncIterator[bytes], path: str, total: int | None) -> int:
    """Write the lines to `path` (through a temporary name, so a failed export leaves no half file); how many."""
    written = 0
    partial = f"{path}.partial"
    with open(partial, "wb") as out, tqdm(total=total, unit=" lines", file=sys.stderr) as bar:
        async for line in lines:
            out.write(line)
            written += 1
            bar.update()
    os.replace(partial, path)
    return written
