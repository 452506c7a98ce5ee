"""Datasets streamed from the store: rows read in chunks of `CHUNK` (by keyset, so memory stays one chunk and one
prompt's responses), turned into lines by `formats`, as NDJSON bytes. The API and the CLI both write these.

Votes of sessions flagged as outliers (the stats' rule, over the export's time range) do not count.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Iterable
from typing import Protocol

from gateway.analytics.rates import OUTLIER_MIN_VOTES
from gateway.exports.formats import (PREFERENCE_FORMATS, Annotation, Judgement, LabeledTrace, Response, Vote,
                                     eval_lines, ndjson, prompt_groups)
from gateway.store.review import EvalRow, ResponseRow

CHUNK = 500
ALL_TIME = (0, 2**62)


class ExportStore(Protocol):
    async def flagged_sessions(self, project_id: int, since: int, until: int, min_votes: int) -> list[str]: ...
    async def eval_chunk(self, project_id: int, after: int, size: int, *, queue_id: str | None,
                         since: int | None, until: int | None) -> list[EvalRow]: ...
    async def response_chunk(self, project_id: int, after: tuple[str, int], size: int, *, since: int | None,
                             until: int | None) -> list[ResponseRow]: ...
    async def judgements(self, project_id: int) -> list[tuple[str, str, str, str]]: ...


def _votes(rows: Iterable[tuple[str, int, str | None, str | None, int]], flagged: Collection[str]) -> list[Vote]:
    return [Vote(session_id=session, value=value, reason=reason, comment=comment, updated_at=updated,
                 flagged=session in flagged) for session, value, reason, comment, updated in rows]


async def _flagged(store: ExportStore, project_id: int, since: int | None, until: int | None,
                   min_votes: int) -> frozenset[str]:
    return frozenset(await store.flagged_sessions(project_id, since or ALL_TIME[0], until or ALL_TIME[1], min_votes))


async def eval_stream(store: ExportStore, project_id: int, *, queue_id: str | None = None, since: int | None = None,
                      until: int | None = None, min_votes: int = OUTLIER_MIN_VOTES) -> AsyncIterator[bytes]:
    """One line per labeled trace (`formats.EvalLine`). `min_votes` is the outlier rule's."""
    flagged = await _flagged(store, project_id, since, until, min_votes)
    after = 0
    while True:
        chunk = await store.eval_chunk(project_id, after, CHUNK, queue_id=queue_id, since=since, until=until)
        rows = [LabeledTrace(
            trace_id=r.trace_id, input=r.input, output=r.output, model=r.model, template=r.template,
            template_version=r.template_version,
            annotations=[Annotation(reviewer=who, labels=labels, note=note) for who, labels, note in r.annotations],
            judge_labels=r.judge, votes=_votes(r.votes, flagged), signals=r.signals) for r in chunk]
        for line in ndjson(eval_lines(rows)):
            yield line
        if len(chunk) < CHUNK:
            return
        after = chunk[-1].row


async def preference_stream(store: ExportStore, project_id: int, format: str, *, since: int | None = None,
                            until: int | None = None, min_votes: int = OUTLIER_MIN_VOTES) -> AsyncIterator[bytes]:
    """Preference lines in `format` (a key of `formats.PREFERENCE_FORMATS`), one prompt's responses at a time: a
    chunk's last prompt waits for the next chunk, which may hold more of its responses."""
    lines_of = PREFERENCE_FORMATS[format]
    flagged = await _flagged(store, project_id, since, until, min_votes)
    judged = [Judgement(a=a, b=b, preferred=preferred, reviewer=reviewer)  # type: ignore[arg-type]
              for a, b, preferred, reviewer in await store.judgements(project_id)]
    held: list[Response] = []
    after = ("", 0)
    while True:
        chunk = await store.response_chunk(project_id, after, CHUNK, since=since, until=until)
        held += [Response(trace_id=r.trace_id, prompt_key=r.prompt_key, input=r.input, output=r.output,
                          votes=_votes(r.votes, flagged), ts=r.ts) for r in chunk]
        last = len(chunk) < CHUNK
        ready = held if last else [r for r in held if r.prompt_key != held[-1].prompt_key]
        held = [] if last else held[len(ready):]
        for line in ndjson(lines_of(prompt_groups(ready, judged))):
            yield line
        if last:
            return
        after = (chunk[-1].prompt_key, chunk[-1].row)
