import itertools
import random

import msgspec
import pytest

from gateway.exports.formats import (PREFERENCE_FORMATS, Annotation, EvalLine, Judgement, LabeledTrace,
                                     OpenAIPreference, PromptGroup, Response, TrlPreference, TrlUnpaired, Vote,
                                     eval_lines, ndjson, openai_lines, preference_pairs, prompt_groups,
                                     resolve_vote, trl_lines, trl_unpaired_lines)
from gateway.messages import Message, as_messages, prompt_key, trace_text

SCHEMAS = {"trl": TrlPreference, "trl_unpaired": TrlUnpaired, "openai": OpenAIPreference}


def up(session, at=0, **kw):
    return Vote(session_id=session, value=1, updated_at=at, **kw)


def down(session, at=0, **kw):
    return Vote(session_id=session, value=0, updated_at=at, **kw)


# --- messages ---

def test_a_string_input_is_one_user_message_and_the_same_prompt():
    assert as_messages("hi") == [Message("user", "hi")]
    assert prompt_key("hi") == prompt_key([Message("user", "hi")])
    assert prompt_key("hi") != prompt_key("hi ") != prompt_key([Message("system", "hi")])
    system = [Message("system", "Be brief."), Message("user", "Why?"), Message("assistant", "No."),
              Message("user", "Why not?")]
    assert trace_text(system, "Because.") == "Why not?\nBecause."
    assert trace_text(None, None) == "\n"


# --- votes ---

@pytest.mark.parametrize("votes,expected", [
    ([], None),
    ([up("a")], 1),
    ([up("a"), down("b")], None),  # a tie: no vote
    ([up("a"), up("b"), down("c")], 1),
    ([up("a"), down("b"), down("c")], 0),
    ([up("a"), down("b", flagged=True)], 1),  # a flagged session does not count
    ([down("a", flagged=True)], None),
])
def test_resolve_vote_majority_of_unflagged_ties_excluded(votes, expected):
    vote = resolve_vote(votes)
    assert (None if vote is None else vote.value) == expected


def test_resolved_vote_carries_the_latest_reason_on_the_winning_side():
    votes = [down("a", at=5, reason="too_long"), down("b", at=9, reason="wrong_information", comment="no"),
             up("c", at=20, comment="fine"), down("d", at=30, reason="other", flagged=True)]
    assert resolve_vote(votes) == votes[1]


# --- evals ---

def test_eval_lines_by_hand():
    labeled = LabeledTrace(
        trace_id="t1", input=[Message("system", "Be nice."), Message("user", "Hi")], output="Go away.", model="m",
        template="greet", template_version="3",
        annotations=[Annotation(reviewer="ann", labels=["tone", "too_long"], note="rude"),
                     Annotation(reviewer="bob", labels=["tone"]), Annotation(reviewer="cy", labels=["unsafe"],
                                                                             note="")],
        judge_labels=["tone"], votes=[down("s1", at=3, reason="offensive_or_unsafe", comment="rude!"), up("s2")],
        signals={"copied": 1})
    unlabeled = LabeledTrace(trace_id="t2", input="x", output="y", judge_labels=["tone"])
    lines = list(ndjson(eval_lines([labeled, unlabeled])))
    assert len(lines) == 1 and lines[0].endswith(b"\n")
    line = msgspec.json.decode(lines[0], type=EvalLine)
    assert line == EvalLine(
        trace_id="t1", input=[Message("system", "Be nice."), Message("user", "Hi")], output="Go away.", model="m",
        template="greet", template_version="3", labels=["tone"], notes=["rude"], judge_labels=["tone"], vote=None,
        reason=None, comment=None, signals={"copied": 1})  # 1 up, 1 down: a tie, so no vote, reason or comment
    assert set(msgspec.json.decode(lines[0])) == {"trace_id", "input", "output", "model", "template",
                                                  "template_version", "labels", "notes", "judge_labels", "vote",
                                                  "reason", "comment", "signals"}


@pytest.mark.parametrize("given,expected", [
    ([["a"]], ["a"]),
    ([["a"], ["b"]], ["a", "b"]),  # two reviewers: half is one
    ([["a", "b"], ["b"], ["c"]], ["b"]),  # three: two needed
    ([["a", "a"], [], [], []], []),  # a label twice from one reviewer still counts once
    ([[], []], []),
])
def test_eval_labels_are_those_at_least_half_the_reviewers_gave(given, expected):
    row = LabeledTrace(trace_id="t", input="i", output="o",
                       annotations=[Annotation(reviewer=f"r{i}", labels=labels) for i, labels in enumerate(given)])
    assert next(eval_lines([row])).labels == expected


# --- preferences ---

def _group(*responses, judgements=()):
    return PromptGroup(list(responses), list(judgements))


def _response(id, votes=(), output=None, input="What is the capital of France?", ts=0):
    return Response(trace_id=id, prompt_key=prompt_key(input), input=input, output=output or f"answer {id}",
                    votes=list(votes), ts=ts)


def _pairs(group):
    return [(chosen.trace_id, rejected.trace_id) for chosen, rejected in preference_pairs(group)]


def test_votes_pair_every_voted_response_in_time_order():
    # The user disliked five attempts and liked the sixth: five pairs, all against the liked one.
    attempts = [_response(f"try{i}", [down("s")], ts=i) for i in range(5)] + [_response("try5", [up("s")], ts=5)]
    assert _pairs(_group(*attempts)) == [("try5", f"try{i}") for i in range(5)]
    two_each = _group(_response("u1", [up("a")], ts=1), _response("d1", [down("b")], ts=2),
                      _response("u2", [up("c")], ts=3), _response("d2", [down("d")], ts=4))
    assert _pairs(two_each) == [("u1", "d1"), ("u2", "d2")]
    assert _pairs(_group(_response("u1", [up("a")]), _response("u2", [up("b")]))) == []


def test_conflicting_flagged_and_identical_responses_make_no_pair():
    group = _group(_response("good", [up("a")], ts=1),
                   _response("torn", [up("b"), down("c")], ts=2),  # a tie: no vote
                   _response("spam", [down("bot", flagged=True)], ts=3),
                   _response("same", [down("d")], output="answer good", ts=4))  # same text as "good"
    assert _pairs(group) == []


def test_judgements_come_first_and_by_majority():
    a, b, c = (_response(id, ts=i) for i, id in enumerate("abc"))
    group = _group(a, b, c, judgements=[
        Judgement(a="a", b="b", preferred="b", reviewer="r1"), Judgement(a="b", b="a", preferred="a", reviewer="r2"),
        Judgement(a="a", b="b", preferred="tie", reviewer="r3"),  # b, b, tie: b wins
        Judgement(a="a", b="c", preferred="a", reviewer="r1"), Judgement(a="a", b="c", preferred="b", reviewer="r2"),
    ])  # a vs c: one each, no pair
    assert _pairs(group) == [("b", "a")]


def test_a_judgement_outranks_votes_on_the_same_two_responses():
    liked, disliked = _response("liked", [up("s1")], ts=1), _response("disliked", [down("s2")], ts=2)
    overruled = _group(liked, disliked, judgements=[Judgement(a="liked", b="disliked", preferred="b", reviewer="r")])
    assert _pairs(overruled) == [("disliked", "liked")]
    even = _group(liked, disliked, judgements=[Judgement(a="liked", b="disliked", preferred="tie", reviewer="r")])
    assert _pairs(even) == []


def test_prompt_groups_never_join_prompts_and_need_order():
    first = [_response("p1a", input="one"), _response("p1b", input="one")]
    second = [_response("p2a", input="two")]
    ordered = sorted(first + second, key=lambda r: r.prompt_key)
    judgements = [Judgement(a="p1a", b="p2a", preferred="a", reviewer="r"),  # across prompts: dropped
                  Judgement(a="p1a", b="p1b", preferred="b", reviewer="r")]
    groups = list(prompt_groups(ordered, judgements))
    assert sorted(sorted(r.trace_id for r in g.responses) for g in groups) == [["p1a", "p1b"], ["p2a"]]
    assert [j for g in groups for j in g.judgements] == judgements[1:]
    with pytest.raises(ValueError):
        list(prompt_groups(sorted(ordered, key=lambda r: r.prompt_key, reverse=True) + ordered[:1]))


def _world(seed: int) -> tuple[list[Response], list[Judgement], dict[str, str]]:
    """Many prompts, each answered a few times (regenerations), votes of every kind, judgements within and across
    prompts. Returns the responses, the judgements and each output's prompt text."""
    rng = random.Random(seed)
    responses, judgements, prompt_of = [], [], {}
    for p in range(150):
        text = f"Question {p}: what is {p} squared?"
        input = text if rng.random() < 0.5 else [Message("system", "Be exact."), Message("user", text)]
        if p % 17 == 0:
            input = [Message("user", text), Message("tool", "calculator: ready")]
        for r in range(rng.randint(1, 5)):
            votes = [Vote(session_id=f"s{v}", value=rng.choice([0, 1]), updated_at=rng.randrange(100),
                          flagged=rng.random() < 0.1) for v in range(rng.choice([0, 1, 1, 1, 2, 3]))]
            output = f"[{p}/{r}] {p * p + rng.choice([0, 0, 1])}"
            prompt_of[output] = text
            responses.append(Response(trace_id=f"p{p}r{r}", prompt_key=prompt_key(input), input=input, output=output,
                                      votes=votes, ts=rng.randrange(1000)))
    ids = [r.trace_id for r in responses]
    for _ in range(300):
        a, b = rng.choice(ids), rng.choice(ids)
        if rng.random() < 0.7:  # mostly within one prompt, as a pairwise queue makes them
            b = a.split("r")[0] + "r" + str(rng.randint(0, 4))
        judgements.append(Judgement(a=a, b=b, preferred=rng.choice(["a", "b", "tie"]), reviewer=rng.choice("xyz")))
    responses.sort(key=lambda r: r.prompt_key)
    return responses, judgements, prompt_of


def _prompt_text(messages):
    return next(m["content"] for m in messages if m["role"] == "user")


@pytest.mark.parametrize("fmt", sorted(PREFERENCE_FORMATS))
@pytest.mark.parametrize("seed", range(3))
def test_every_line_validates_and_pairs_one_prompt(fmt, seed):
    responses, judgements, prompt_of = _world(seed)
    lines = list(ndjson(PREFERENCE_FORMATS[fmt](prompt_groups(responses, judgements))))
    assert len(lines) > 50
    for raw in lines:
        msgspec.json.decode(raw, type=SCHEMAS[fmt])  # the Struct forbids unknown fields and checks every role
        line = msgspec.json.decode(raw)
        if fmt == "trl_unpaired":
            assert prompt_of[line["completion"][0]["content"]] == _prompt_text(line["prompt"])
            continue
        if fmt == "trl":
            prompt, chosen, rejected = line["prompt"], line["chosen"], line["rejected"]
        else:
            prompt, chosen, rejected = line["input"]["messages"], line["preferred_output"], line["non_preferred_output"]
            assert all(m["role"] != "tool" for m in prompt)
        assert len(chosen) == len(rejected) == 1 and chosen[0]["role"] == rejected[0]["role"] == "assistant"
        assert chosen[0]["content"] != rejected[0]["content"]
        assert prompt_of[chosen[0]["content"]] == prompt_of[rejected[0]["content"]] == _prompt_text(prompt)


def test_formats_agree_on_the_pairs():
    responses, judgements, _ = _world(7)
    trl = list(trl_lines(prompt_groups(responses, judgements)))
    openai = list(openai_lines(prompt_groups(responses, judgements)))
    with_tools = {(line.chosen[0].content, line.rejected[0].content) for line in trl
                  if any(m.role == "tool" for m in line.prompt)}
    assert with_tools  # the world has some, and openai leaves exactly those out
    assert {(o.preferred_output[0].content, o.non_preferred_output[0].content) for o in openai} == {
        (t.chosen[0].content, t.rejected[0].content) for t in trl} - with_tools
    unpaired = list(trl_unpaired_lines(prompt_groups(responses, judgements)))
    assert len(unpaired) == sum(resolve_vote(r.votes) is not None for r in responses)


def test_lines_stream_without_reading_everything_first():
    def endless():
        for p in itertools.count():
            key = f"{p:012d}"
            yield Response(trace_id=f"{p}-up", prompt_key=key, input=f"q{p}", output="yes", votes=[up("a")])
            yield Response(trace_id=f"{p}-down", prompt_key=key, input=f"q{p}", output="no", votes=[down("b")])

    first = list(itertools.islice(ndjson(trl_lines(prompt_groups(endless()))), 3))
    assert [msgspec.json.decode(line)["prompt"][0]["content"] for line in first] == ["q0", "q1", "q2"]


def test_trl_file_loads_with_the_datasets_library(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    datasets = pytest.importorskip("datasets")
    responses, judgements, _ = _world(1)
    path = tmp_path / "preferences.jsonl"
    with path.open("wb") as out:
        out.writelines(ndjson(trl_lines(prompt_groups(responses, judgements))))
    table = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "cache"))
    assert table.column_names == ["prompt", "chosen", "rejected"]
    assert table.num_rows == path.read_bytes().count(b"\n")
    row = table[0]
    assert row["chosen"][0]["role"] == "assistant" and {m["role"] for m in row["prompt"]} <= {"system", "user", "tool"}
