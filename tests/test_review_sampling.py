import random
from collections import Counter

import msgspec
import pytest

from gateway.review.sampling import Candidate, Pair, Response, Sampling, pairs, plan_fill, random_count

# Five kinds of conversation, each a template with slots, so texts of one kind differ only in their details.
TOPICS = {
    "refund": "I want a refund for order {n}. Sorry, I cannot process refunds for order {n}, please contact billing.",
    "link": "Where is the {w} documentation? See https://docs.example.com/{w}/guide for everything about {w}.",
    "bread": "How do I bake {w} bread? Mix flour, water and yeast, knead the {w} dough and bake it at 220 degrees.",
    "python": "Fix this Python error: KeyError '{w}' in a dict lookup. Use dict.get('{w}') or check membership first.",
    "weather": "What is the weather in {w} tomorrow? Sunny in {w}, light winds from the west, 18 degrees at noon.",
}
WORDS = ["alpha", "bravo", "cobalt", "delta", "ember", "fjord", "garnet", "harbor", "indigo", "juniper", "kelvin",
         "lumen", "meadow", "nimbus", "onyx", "prism", "quartz", "raven", "sierra", "tundra"]


def _texts(topic: str, count: int, rng: random.Random) -> list[str]:
    return [TOPICS[topic].format(w=rng.choice(WORDS), n=rng.randrange(10**6)) for _ in range(count)]


def _candidates(mix: dict[str, int], seed: int = 0) -> list[Candidate]:
    rng = random.Random(seed)
    out = [Candidate(id=f"{topic}-{i}", text=text, template=f"t-{topic}")
           for topic, count in mix.items() for i, text in enumerate(_texts(topic, count, rng))]
    rng.shuffle(out)
    return out


def _topic(id: str) -> str:
    return id.split("-")[0]


def _check_fill(picks, spec, in_queue=()):
    ids = [id for id, _ in picks]
    assert len(ids) == len(set(ids)), "a trace twice in one fill"
    assert not set(ids) & set(in_queue), "a trace already in the queue"
    assert len(ids) <= spec.size


@pytest.mark.parametrize("size,share,expected", [
    (100, 0.1, 10), (5, 0.1, 1), (4, 0.1, 0), (25, 0.1, 3), (15, 0.1, 2), (1, 0.5, 1), (3, 0.5, 2),
    (10, 0.0, 0), (10, 1.0, 10), (7, 0.33, 2), (50, 0.05, 3),
])
def test_random_count_rounds_half_up(size, share, expected):
    assert random_count(size, share) == expected


@pytest.mark.parametrize("body", [
    {"strategy": "smart"}, {"size": 0}, {"size": 10_001}, {"random_share": 1.5}, {"random_share": -0.1},
    {"by": "user"}, {"seed": "7"}, {"seed": -1}, {"unknown": 1},
])
def test_sampling_spec_refuses_bad_values(body):
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(body, Sampling)


def test_sampling_spec_defaults():
    assert msgspec.convert({}, Sampling) == Sampling(strategy="all", size=100, by="template", random_share=0.1, seed=0)


def test_all_takes_candidates_in_order_and_skips_the_queue():
    candidates = [Candidate(f"t{i}") for i in range(30)] + [Candidate("t3")]  # t3 twice
    spec = Sampling(strategy="all", size=10, random_share=0.0)
    picks = plan_fill(spec, candidates, [], in_queue={"t0", "t1"})
    assert sorted(id for id, _ in picks) == sorted(f"t{i}" for i in range(2, 12))
    assert {strategy for _, strategy in picks} == {"all"}


def test_stratified_counts_per_stratum_by_hand():
    # 100 + 30 + 3 + 5 (no template) candidates, 40 picks: the 3 and the 5 are taken whole and the rest split evenly.
    candidates = ([Candidate(f"a{i}", template="a") for i in range(100)] + [Candidate(f"b{i}", template="b") for i in
                  range(30)] + [Candidate(f"c{i}", template="c") for i in range(3)] +
                  [Candidate(f"n{i}") for i in range(5)])
    spec = Sampling(strategy="stratified", size=40, random_share=0.0, seed=3)
    picks = plan_fill(spec, candidates, [])
    assert Counter(id[0] for id, _ in picks) == {"a": 16, "b": 16, "c": 3, "n": 5}
    assert {strategy for _, strategy in picks} == {"stratified"}


@pytest.mark.parametrize("seed", range(20))
def test_stratified_is_round_robin_on_random_strata(seed):
    rng = random.Random(seed)
    sizes = {f"m{s}": rng.choice([1, 2, 5, 20, 200]) for s in range(rng.randint(2, 9))}
    candidates = [Candidate(f"{m}/{i}", model=m) for m, n in sizes.items() for i in range(n)]
    rng.shuffle(candidates)
    spec = Sampling(strategy="stratified", by="model", size=rng.randint(1, 120), random_share=0.0, seed=seed)
    picks = plan_fill(spec, candidates, [])
    _check_fill(picks, spec)
    counts = Counter(id.split("/")[0] for id, _ in picks)
    assert len(picks) == min(spec.size, len(candidates))
    # Water-filling: a stratum not taken whole has the most picks, or one less; none taken whole has more.
    top = max(counts.values())
    for model, n in sizes.items():
        assert counts[model] == n or counts[model] >= top - 1
        assert counts[model] <= top


@pytest.mark.parametrize("seed", range(4))
def test_cluster_gives_a_dominant_failure_no_more_than_its_fair_share(seed):
    # 80% of the candidates are one failure; four other kinds share the rest.
    candidates = _candidates({"refund": 400, "link": 25, "bread": 25, "python": 25, "weather": 25}, seed=seed)
    spec = Sampling(strategy="cluster", size=20, random_share=0.0, seed=seed)
    picks = plan_fill(spec, candidates, [])
    _check_fill(picks, spec)
    assert len(picks) == 20 and {strategy for _, strategy in picks} == {"cluster"}
    by_topic = Counter(_topic(id) for id, _ in picks)
    assert by_topic["refund"] <= 20 / len(TOPICS)  # its fair share of five kinds, where a uniform draw gives it 16
    assert set(by_topic) == set(TOPICS)


def test_cluster_takes_everything_when_there_is_room():
    candidates = _candidates({"refund": 3, "bread": 2})
    picks = plan_fill(Sampling(strategy="cluster", size=10, random_share=0.0), candidates, [])
    assert sorted(id for id, _ in picks) == sorted(c.id for c in candidates)


def test_novelty_prefers_what_is_unlike_the_labeled():
    rng = random.Random(4)
    labeled = _texts("refund", 30, rng) + _texts("bread", 30, rng)
    candidates = _candidates({"refund": 60, "bread": 60, "weather": 6, "python": 6}, seed=5)
    spec = Sampling(strategy="novelty", size=12, random_share=0.0, seed=1)
    picks = plan_fill(spec, candidates, [], labeled=labeled)
    _check_fill(picks, spec)
    assert Counter(_topic(id) for id, _ in picks) == {"weather": 6, "python": 6}


def test_novelty_ranks_empty_texts_last_and_is_a_seeded_shuffle_without_labeled():
    candidates = [Candidate(f"empty-{i}", text="") for i in range(5)] + _candidates({"refund": 5, "link": 5})
    picks = plan_fill(Sampling(strategy="novelty", size=10, random_share=0.0, seed=2), candidates, [],
                      labeled=["unrelated words about gardening"])
    assert {_topic(id) for id, _ in picks} == {"refund", "link"}
    unlabeled = [plan_fill(Sampling(strategy="novelty", size=4, random_share=0.0, seed=seed), candidates[5:], [])
                 for seed in range(3)]
    assert len({tuple(sorted(fill)) for fill in unlabeled}) > 1


def test_random_share_is_drawn_from_all_traces_not_only_the_filtered():
    population = [f"trace-{i}" for i in range(1000)]
    candidates = [Candidate(id) for id in population[:200]]  # the filter matches a fifth of the range
    in_queue = set(population[100:150]) | set(population[500:550])
    outside = 0
    for seed in range(60):
        spec = Sampling(strategy="all", size=50, random_share=0.2, seed=seed)
        picks = plan_fill(spec, candidates, population, in_queue=in_queue)
        _check_fill(picks, spec, in_queue)
        random_picks = [id for id, strategy in picks if strategy == "random"]
        assert len(random_picks) == 10  # exactly the rounded share, well within ±2
        assert len(picks) == 50
        outside += sum(int(id.split("-")[1]) >= 200 for id in random_picks)
    # Uniform over the 900 ids not in the queue, 750 of them outside the filter: 600 draws, expect 500 outside.
    assert outside / 600 == pytest.approx(750 / 900, abs=0.05)


def test_random_share_and_strategy_never_pick_the_same_trace():
    population = [f"t{i}" for i in range(30)]
    candidates = [Candidate(id) for id in population]
    for seed in range(30):
        spec = Sampling(strategy="all", size=30, random_share=0.5, seed=seed)
        picks = plan_fill(spec, candidates, population, in_queue={"t0"})
        _check_fill(picks, spec, {"t0"})
        assert len(picks) == 29 and Counter(s for _, s in picks) == {"random": 15, "all": 14}


def test_a_short_population_or_candidate_list_gives_a_smaller_fill():
    spec = Sampling(strategy="stratified", size=20, random_share=0.5)
    picks = plan_fill(spec, [Candidate("c1"), Candidate("c2")], ["p1", "p2", "p3"], in_queue={"p3"})
    assert sorted(picks) == sorted([("p1", "random"), ("p2", "random"), ("c1", "stratified"),
                                    ("c2", "stratified")])


@pytest.mark.parametrize("strategy", ["all", "stratified", "cluster", "novelty"])
def test_same_seed_same_fill_and_another_seed_another(strategy):
    candidates = _candidates({"refund": 80, "link": 20, "bread": 20, "python": 10, "weather": 10})
    population = [c.id for c in candidates] + [f"other-{i}" for i in range(300)]
    labeled = _texts("refund", 10, random.Random(1))

    def fill(seed):
        return plan_fill(Sampling(strategy=strategy, size=30, seed=seed), candidates, population,
                         in_queue={"other-1"}, labeled=labeled)

    first = fill(7)
    assert fill(7) == first != fill(8)
    _check_fill(first, Sampling(size=30), {"other-1"})


def test_pairs_only_pair_responses_to_one_prompt():
    rng = random.Random(0)
    responses = [Response(f"p{p}-r{r}", prompt_key=f"prompt-{p}", output=f"answer {p}.{r}", ts=rng.randrange(100))
                 for p in range(40) for r in range(rng.randint(1, 4))]
    rng.shuffle(responses)
    found = pairs(responses, seed=1)
    by_prompt = Counter(r.prompt_key for r in responses)
    assert len(found) == sum(n - 1 for n in by_prompt.values())  # a chain per prompt
    for pair in found:
        assert pair.a.split("-")[0] == pair.b.split("-")[0] and pair.a != pair.b
    assert len({pair.key for pair in found}) == len(found)
    assert pairs(list(reversed(responses)), seed=1) == found  # the input's order does not matter, the seed does


def test_pairs_chain_in_time_and_skip_repeated_outputs():
    responses = [Response("first", "k", "Paris.", ts=1), Response("regen", "k", "Paris.", ts=2),
                 Response("third", "k", "It is Paris.", ts=3), Response("fourth", "k", "Lyon.", ts=4),
                 Response("none", "k", None, ts=5), Response("alone", "other", "Hi", ts=1)]
    assert {pair.key for pair in pairs(responses)} == {Pair("first", "third").key, Pair("third", "fourth").key}


def test_pair_order_is_a_fair_seeded_coin():
    responses = [Response(f"{p}-{side}", f"k{p}", f"{side} answer", ts=i) for p in range(400)
                 for i, side in enumerate(("early", "late"))]
    found = pairs(responses, seed=3)
    early_first = sum(pair.a.endswith("early") for pair in found)
    assert 160 <= early_first <= 240  # 400 fair flips: mean 200, sd 10
    assert pairs(responses, seed=3) == found != pairs(responses, seed=4)


def test_pairs_feed_plan_fill_by_key():
    found = pairs([Response(f"r{i}", "k", f"answer {i}", ts=i) for i in range(6)])
    candidates = [Candidate(pair.key) for pair in found]
    picks = plan_fill(Sampling(size=3, random_share=0.0), candidates, [], in_queue={found[0].key})
    assert found[0].key not in {id for id, _ in picks} and len(picks) == 3
