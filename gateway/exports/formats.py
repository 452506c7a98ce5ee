"""Eval and preference datasets: plain rows in, one Struct per output line out, streamed.

Every output line is one of the Structs below; `ndjson` encodes them. Nothing here reads a database: the store yields
the rows, a route or the CLI writes the lines, and memory stays that of one row (evals) or one prompt's responses
(preferences).

Rules:
- A response's vote (`resolve_vote`): the current votes of sessions not flagged as outliers; the majority value wins,
  a tie (up and down equally often) gives no vote. Its reason and comment are those of the latest vote on the winning
  side.
- Eval `labels`: the labels at least half of the trace's reviewers gave (with one reviewer, theirs; with two, either's;
  with three, two's), sorted. `notes`: the reviewers' non-empty notes. A trace no reviewer labeled has no eval line.
- Preference pairs come from one prompt only (`PromptGroup`: responses with one prompt key), never across prompts:
  - pairwise judgements: per pair, the side more reviewers preferred (`tie` counts for neither side; equal counts:
    no pair);
  - votes: the up-voted responses against the down-voted ones, in time order: the longer side's responses each get
    one partner from the shorter side, taken in turn, so u ups and d downs make max(u, d) pairs and every voted
    response is in one. A pair a judgement already decided is not made again from votes.
  Two responses with the same output make no pair. The prompt is the earliest response's input.
- `trl_unpaired`: one line per response with a vote (`label`: up is true), its prompt the response's own input.
- `openai`: prompts that contain a `tool` message are left out: OpenAI's tool messages need a `tool_call_id`, which
  traces do not carry.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from itertools import groupby
from typing import Literal

import msgspec
from msgspec import Struct

from gateway.messages import Input, Message, as_messages

# --- Rows in ---


class Vote(Struct, frozen=True, kw_only=True):
    """A session's current vote on a response."""

    session_id: str
    value: Literal[0, 1]  # 1 up, 0 down
    reason: str | None = None
    comment: str | None = None
    updated_at: int = 0
    flagged: bool = False  # the session is flagged as an outlier (the stats' rule): its vote does not count


class Annotation(Struct, frozen=True, kw_only=True):
    """One reviewer's labels on a trace."""

    reviewer: str
    labels: list[str]
    note: str | None = None


class LabeledTrace(Struct, kw_only=True):
    trace_id: str
    input: Input | None
    output: str | None
    model: str | None = None
    template: str | None = None
    template_version: str | None = None
    annotations: list[Annotation] = []
    judge_labels: list[str] = []
    votes: list[Vote] = []
    signals: dict[str, int] = {}


class Response(Struct, kw_only=True):
    trace_id: str
    prompt_key: str  # `gateway.messages.prompt_key` of its input, or its parent's key for a regeneration
    input: Input | None
    output: str | None
    votes: list[Vote] = []
    ts: int = 0


class Judgement(Struct, frozen=True, kw_only=True):
    """One reviewer's choice on a pairwise item: `a` and `b` are trace ids."""

    a: str
    b: str
    preferred: Literal["a", "b", "tie"]
    reviewer: str


class PromptGroup(Struct):
    """The responses to one prompt and the judgements between them."""

    responses: list[Response]
    judgements: list[Judgement] = []


# --- Lines out ---


class EvalLine(Struct, forbid_unknown_fields=True):
    trace_id: str
    input: Input | None
    output: str | None
    model: str | None
    template: str | None
    template_version: str | None
    labels: list[str]
    notes: list[str]
    judge_labels: list[str]
    vote: Literal["up", "down"] | None
    reason: str | None
    comment: str | None
    signals: dict[str, int]


class AssistantMessage(Struct, forbid_unknown_fields=True, kw_only=True):
    role: Literal["assistant"] = "assistant"
    content: str


class TrlPreference(Struct, forbid_unknown_fields=True):
    """TRL's conversational preference type (`DPOTrainer`)."""

    prompt: list[Message]
    chosen: list[AssistantMessage]
    rejected: list[AssistantMessage]


class TrlUnpaired(Struct, forbid_unknown_fields=True):
    """TRL's conversational unpaired preference type (`KTOTrainer`)."""

    prompt: list[Message]
    completion: list[AssistantMessage]
    label: bool


class OpenAIInput(Struct, forbid_unknown_fields=True):
    messages: list[Message]


class OpenAIPreference(Struct, forbid_unknown_fields=True):
    """A line of an OpenAI preference (DPO) fine-tuning file."""

    input: OpenAIInput
    preferred_output: list[AssistantMessage]
    non_preferred_output: list[AssistantMessage]


_encode = msgspec.json.Encoder().encode


def ndjson(lines: Iterable[Struct]) -> Iterator[bytes]:
    for line in lines:
        yield _encode(line) + b"\n"


# --- Evals ---


def resolve_vote(votes: Iterable[Vote]) -> Vote | None:
    """The vote that stands for a response (see the module's rules), or None."""
    counted = [v for v in votes if not v.flagged]
    ups = sum(v.value for v in counted)
    downs = len(counted) - ups
    if ups == downs:
        return None
    winner = 1 if ups > downs else 0
    return max((v for v in counted if v.value == winner), key=lambda v: (v.updated_at, v.session_id))


def eval_lines(rows: Iterable[LabeledTrace]) -> Iterator[EvalLine]:
    for row in rows:
        if not row.annotations:
            continue
        vote = resolve_vote(row.votes)
        yield EvalLine(
            trace_id=row.trace_id, input=row.input, output=row.output, model=row.model, template=row.template,
            template_version=row.template_version, labels=majority_labels(row.annotations),
            notes=[a.note for a in row.annotations if a.note], judge_labels=row.judge_labels,
            vote=None if vote is None else ("up" if vote.value else "down"),
            reason=None if vote is None else vote.reason, comment=None if vote is None else vote.comment,
            signals=row.signals)


def majority_labels(annotations: list[Annotation]) -> list[str]:
    """The labels at least half of the reviewers gave."""
    given = Counter(label for a in annotations for label in set(a.labels))
    return sorted(label for label, count in given.items() if 2 * count >= len(annotations))


# --- Preferences ---


def prompt_groups(responses: Iterable[Response], judgements: Iterable[Judgement] = ()) -> Iterator[PromptGroup]:
    """Responses ordered by `prompt_key` (as the store streams them) grouped per prompt, each group with the judgements
    whose two traces are both in it. Judgements are held in memory (one per human choice); responses are not."""
    by_trace: dict[str, list[Judgement]] = defaultdict(list)
    for judgement in judgements:
        by_trace[judgement.a].append(judgement)
    previous: str | None = None
    for key, group in groupby(responses, key=lambda r: r.prompt_key):
        if previous is not None and key < previous:
            raise ValueError("responses must come ordered by prompt_key")
        previous = key
        members = list(group)
        ids = {r.trace_id for r in members}
        yield PromptGroup(members, [j for r in members for j in by_trace.get(r.trace_id, ()) if j.b in ids])


def preference_pairs(group: PromptGroup) -> Iterator[tuple[Response, Response]]:
    """(chosen, rejected) pairs of one prompt's responses, by the module's rules."""
    by_id = {r.trace_id: r for r in group.responses if r.output is not None}
    made: set[frozenset[str]] = set()

    def pair(chosen: Response, rejected: Response) -> Iterator[tuple[Response, Response]]:
        key = frozenset((chosen.trace_id, rejected.trace_id))
        if key not in made and chosen.output != rejected.output:
            made.add(key)
            yield chosen, rejected

    wins: dict[frozenset[str], Counter[str]] = defaultdict(Counter)
    for j in group.judgements:
        if j.a in by_id and j.b in by_id and j.a != j.b:
            counts = wins[frozenset((j.a, j.b))]  # a pair called a tie is still judged
            if j.preferred != "tie":
                counts[j.a if j.preferred == "a" else j.b] += 1
    for key, counts in wins.items():
        first, second = sorted(key)
        if counts[first] != counts[second]:
            winner, loser = (first, second) if counts[first] > counts[second] else (second, first)
            yield from pair(by_id[winner], by_id[loser])
        else:
            made.add(key)  # the reviewers called it even: votes do not decide it either

    in_order = sorted(by_id.values(), key=lambda r: (r.ts, r.trace_id))
    resolved = [(r, resolve_vote(r.votes)) for r in in_order]
    ups = [r for r, vote in resolved if vote is not None and vote.value == 1]
    downs = [r for r, vote in resolved if vote is not None and vote.value == 0]
    if ups and downs:
        if len(ups) >= len(downs):
            for i, up in enumerate(ups):
                yield from pair(up, downs[i % len(downs)])
        else:
            for i, down in enumerate(downs):
                yield from pair(ups[i % len(ups)], down)


def _prompt(group: PromptGroup) -> list[Message] | None:
    earliest = min((r for r in group.responses if r.input is not None), key=lambda r: (r.ts, r.trace_id), default=None)
    return None if earliest is None or earliest.input is None else as_messages(earliest.input)


def _answer(response: Response) -> list[AssistantMessage]:
    return [AssistantMessage(content=response.output or "")]


def trl_lines(groups: Iterable[PromptGroup]) -> Iterator[TrlPreference]:
    for group in groups:
        prompt = _prompt(group)
        if prompt is not None:
            for chosen, rejected in preference_pairs(group):
                yield TrlPreference(prompt, _answer(chosen), _answer(rejected))


def openai_lines(groups: Iterable[PromptGroup]) -> Iterator[OpenAIPreference]:
    for group in groups:
        prompt = _prompt(group)
        if prompt is not None and all(m.role != "tool" for m in prompt):
            for chosen, rejected in preference_pairs(group):
                yield OpenAIPreference(OpenAIInput(prompt), _answer(chosen), _answer(rejected))


def trl_unpaired_lines(groups: Iterable[PromptGroup]) -> Iterator[TrlUnpaired]:
    for group in groups:
        for response in sorted(group.responses, key=lambda r: (r.ts, r.trace_id)):
            vote = resolve_vote(response.votes)
            if vote is not None and response.input is not None and response.output is not None:
                yield TrlUnpaired(as_messages(response.input), _answer(response), label=vote.value == 1)


PREFERENCE_FORMATS: dict[str, Callable[[Iterable[PromptGroup]], Iterator[Struct]]] = {
    "trl": trl_lines, "trl_unpaired": trl_unpaired_lines, "openai": openai_lines}
