"""Which traces a queue fill takes: the sampling strategies, the random baseline, and pairs for pairwise queues.

`plan_fill` is pure: the caller reads candidates (the traces matching the queue's filter), the population (every
trace id in the time range, filtered or not), the ids already in the queue and the texts already labeled or exported,
and writes the picks it returns. Same arguments in the same order and the same seed: the same picks.

The rules:
- `random_share` first: `random_count(size, random_share)` items (size × share rounded half up, so 0.1 of 5 is 1 and
  0.1 of 4 is 0) drawn uniformly from the population, whether or not they match the filter. They are a baseline the
  strategy cannot bias, so they are drawn before the strategy and independently of it.
- The strategy then picks the rest, `size` minus the random picks, from the candidates not already picked:
  - `all`: the candidates in the order given (the caller orders them, e.g. newest first);
  - `stratified`: round-robin over the values of `by` (a missing value is a stratum of its own): every stratum gets
    the same number, or one more, unless it runs out, when the others take its place;
  - `cluster`: the candidates' texts embedded and clustered (`cluster.cluster`), then round-robin over the clusters
    as over strata, so a cluster of 80% of the candidates gets about 1/k of the fill, not 80%;
  - `novelty`: the candidates whose highest cosine similarity to any labeled text is lowest. Only the labeled count,
    not this fill's other picks: those are not labeled yet, and ten traces of one new failure are all still new
    (spreading a fill is what `cluster` is for). Candidates whose text has no features (empty) come last.
  Within a stratum or cluster, and among equals, the order is a seeded shuffle.
- A trace already in the queue is never picked, nor one trace twice. If the population or the candidates run out,
  the fill is smaller than `size`; neither part makes up for the other.
- The picks come back in a seeded random order, so a queue's order does not tell a reviewer which strategy chose an
  item.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Hashable, Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from itertools import groupby
from typing import Annotated, Literal, NamedTuple, TypeVar

import numpy as np
from msgspec import Meta, Struct

from gateway.review.cluster import cluster
from gateway.review.embed import Embedder, HashedTfidf, max_similarity

MAX_FILL = 10_000
Strategy = Literal["all", "stratified", "cluster", "novelty"]
T = TypeVar("T")


class Sampling(Struct, forbid_unknown_fields=True, kw_only=True):
    """A queue's `sampling` object."""

    strategy: Strategy = "all"
    size: Annotated[int, Meta(ge=1, le=MAX_FILL)] = 100
    by: Literal["template", "model"] = "template"  # the strata of `stratified`
    random_share: Annotated[float, Meta(ge=0.0, le=1.0)] = 0.1
    seed: Annotated[int, Meta(ge=0, le=2**63 - 1)] = 0


@dataclass(frozen=True, slots=True)
class Candidate:
    id: str  # a trace id; for a pairwise queue, a `Pair.key`
    text: str = ""  # what `cluster` and `novelty` compare: `gateway.messages.trace_text(input, output)`
    model: str | None = None
    template: str | None = None


class Pick(NamedTuple):
    id: str
    strategy: Literal["all", "stratified", "cluster", "novelty", "random"]


def random_count(size: int, share: float) -> int:
    """How many of a fill of `size` are drawn at random: size × share, rounded half up (in decimal, so 0.1 × 25 is
    2.5 and rounds to 3, whatever binary floating point makes of it)."""
    return int((Decimal(size) * Decimal(repr(share))).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def plan_fill(spec: Sampling, candidates: Sequence[Candidate], population: Sequence[str], *,
              in_queue: Collection[str] = frozenset(), labeled: Sequence[str] = (),
              embedder: Embedder | None = None) -> list[Pick]:
    """The items one fill adds to a queue, each with the strategy that chose it.

    `population` holds distinct ids; any sequence will do, a lazy one too: it is only indexed, at most
    `len(in_queue)` + the random count times. `labeled` are the texts of traces already labeled or exported, which
    `novelty` moves away from. `embedder` defaults to `HashedTfidf()`. Clustering 5,000 candidates takes a few CPU
    seconds: call this off the event loop.
    """
    rng = random.Random(spec.seed)
    taken = set(in_queue)
    picks = [Pick(id, "random") for id in _draw(population, random_count(spec.size, spec.random_share), taken, rng)]
    taken.update(id for id, _ in picks)
    eligible = [c for c in _first_of_each(candidates, lambda c: c.id) if c.id not in taken]
    wanted = min(spec.size - len(picks), len(eligible))
    if spec.strategy == "all":
        chosen = eligible[:wanted]
    elif spec.strategy == "stratified":
        key = (lambda c: c.template) if spec.by == "template" else (lambda c: c.model)
        chosen = _round_robin(_groups(eligible, key, rng), wanted)
    elif wanted == len(eligible):  # `cluster` or `novelty` with room for every candidate: nothing to choose
        chosen = eligible
    elif spec.strategy == "cluster":
        labels = cluster((embedder or HashedTfidf())([c.text for c in eligible]), seed=spec.seed).labels
        by_cluster = dict(zip((c.id for c in eligible), labels.tolist(), strict=True))
        chosen = _round_robin(_groups(eligible, lambda c: by_cluster[c.id], rng), wanted)
    else:
        chosen = _most_novel(eligible, labeled, wanted, embedder or HashedTfidf(), rng)
    picks += [Pick(c.id, spec.strategy) for c in chosen]
    rng.shuffle(picks)
    return picks


def _draw(population: Sequence[str], count: int, taken: set[str], rng: random.Random) -> list[str]:
    """`count` ids drawn uniformly without replacement from `population`, none in `taken`.

    At most len(taken) of a sample are excluded, so a sample of count + len(taken) indices has enough, when the
    population has them; `random.sample` gives them in random order, so its first valid ones are a uniform draw.
    """
    if count <= 0:
        return []
    drawn: dict[str, None] = {}  # a set that keeps the draw's order
    for index in rng.sample(range(len(population)), min(len(population), count + len(taken))):
        id = population[index]
        if id not in taken:
            drawn[id] = None
            if len(drawn) == count:
                break
    return list(drawn)


def _first_of_each(items: Iterable[T], key: Callable[[T], Hashable]) -> list[T]:
    """The first item of each key, in order."""
    first: dict[Hashable, T] = {}
    for item in items:
        first.setdefault(key(item), item)
    return list(first.values())


def _groups(items: list[Candidate], key: Callable[[Candidate], Hashable | None],
            rng: random.Random) -> list[list[Candidate]]:
    """Items grouped by `key`, each group shuffled, the groups in shuffled order (so no group always gets the +1)."""
    ordered = sorted(items, key=lambda c: _sortable(key(c)))
    groups = [list(group) for _, group in groupby(ordered, key=lambda c: _sortable(key(c)))]
    for group in groups:
        rng.shuffle(group)
    rng.shuffle(groups)
    return groups


def _sortable(value: object) -> tuple[bool, str]:
    return (value is not None, str(value))


def _round_robin(groups: list[list[T]], count: int) -> list[T]:
    """One from each group in turn until `count` are taken: every group gets the same number, or one more, unless it
    runs out."""
    taken: list[T] = []
    depth = 0
    while len(taken) < count:
        row = [group[depth] for group in groups if depth < len(group)]
        if not row:
            break
        taken += row[: count - len(taken)]
        depth += 1
    return taken


def _most_novel(eligible: list[Candidate], labeled: Sequence[str], count: int, embedder: Embedder,
                rng: random.Random) -> list[Candidate]:
    vectors = embedder([c.text for c in eligible] + list(labeled))
    mine, known = vectors[: len(eligible)], vectors[len(eligible) :]
    order = list(range(len(eligible)))
    rng.shuffle(order)  # a stable sort keeps equals in this seeded order
    closest = max_similarity(mine[order], known)
    closest[np.linalg.norm(mine[order], axis=1) == 0] = np.inf  # an empty text is like nothing: no news either
    return [eligible[order[i]] for i in np.argsort(closest, kind="stable")[:count]]


# --- Pairwise queues ---

@dataclass(frozen=True, slots=True)
class Response:
    id: str  # the trace id
    prompt_key: str  # `gateway.messages.prompt_key` of its input, or its parent's key for a regeneration
    output: str | None
    ts: int = 0


@dataclass(frozen=True, slots=True)
class Pair:
    """Two responses to one prompt, in the order the reviewer sees them: `a` left, `b` right."""

    a: str
    b: str

    @property
    def key(self) -> str:
        """The pair whichever way round: its two trace ids sorted and joined by a newline, which no trace id holds."""
        return "\n".join(sorted((self.a, self.b)))


def pairs(responses: Iterable[Response], seed: int = 0) -> list[Pair]:
    """Pairs of responses to the same prompt (same `prompt_key`), for a pairwise queue.

    Within a prompt, responses in time order (then by id), each paired with the next one, after dropping a response
    whose output repeats an earlier one's (nothing to choose between) or that has none. Each pair's a/b order is a
    seeded coin flip, so which is shown first carries no information. Responses to different prompts are never paired.
    """
    rng = random.Random(seed)
    by_prompt = sorted(responses, key=lambda r: (r.prompt_key, r.ts, r.id))
    found: list[Pair] = []
    for _, group in groupby(by_prompt, key=lambda r: r.prompt_key):
        distinct = _first_of_each((r for r in group if r.output is not None), lambda r: r.output)
        for first, second in zip(distinct, distinct[1:]):
            found.append(Pair(second.id, first.id) if rng.random() < 0.5 else Pair(first.id, second.id))
    return found
