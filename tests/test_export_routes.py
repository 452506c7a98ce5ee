"""Datasets from a running gateway: `GET /v1/exports/evals|preferences` streamed as NDJSON, and the CLI's
`export`, `reviewer` and `labels` commands. Every line of every format validates against its schema."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from gateway.cli import main
from gateway.exports import stream
from gateway.exports.formats import EvalLine, OpenAIPreference, TrlPreference, TrlUnpaired
from tests.conftest import Harness
from tests.test_queues import auth, claim, fill, label, make_queue, reviewer, vote

SCHEMAS = {"trl": TrlPreference, "trl_unpaired": TrlUnpaired, "openai": OpenAIPreference}
PROMPTS = {"colour": "Name a colour", "animal": [{"role": "system", "content": "Be brief."},
                                                 {"role": "user", "content": "Name an animal"}]}


async def seed(h: Harness) -> dict[str, Any]:
    """Two prompts with several responses each (regenerations included), votes, a flagged session, a labeled single
    queue (two reviewers) and a judged pairwise queue. Returns what each trace answered and to which prompt."""
    outputs: dict[str, tuple[str, str]] = {}  # trace id -> (prompt name, output)
    for prompt, input in PROMPTS.items():
        for i in range(4):
            trace_id = f"{prompt}-{i}"
            parent = {"parent_trace_id": f"{prompt}-0"} if i == 3 else {}
            await h.trace(trace_id, f"s-{trace_id}", input=input if not parent else "regenerate",
                          output=f"{prompt} #{i}", model="m", template=prompt, **parent)
            outputs[trace_id] = (prompt, f"{prompt} #{i}")
    await vote(h, "colour-0", "u1", 1)
    await vote(h, "colour-1", "u2", 0, reason="too_long", comment="meh")
    await vote(h, "colour-3", "u3", 0)
    await vote(h, "animal-2", "u4", 1)
    for i in range(10):  # a session that only ever votes down: flagged, its votes count for nothing
        await h.trace(f"noise-{i}", "s-noise", input=f"noise {i}", output="x")
        await vote(h, f"noise-{i}", "grump", 0)
    await vote(h, "animal-1", "grump", 0)

    single = await make_queue(h, filter={"template": "colour"}, sampling={"size": 10, "random_share": 0},
                              reviewers_per_item=2)
    await fill(h, single["id"])
    ann, bob = await reviewer(h, "ann"), await reviewer(h, "bob")
    for key, labels in ((ann, ["tone"]), (bob, ["tone", "too_long"])):
        for _ in range(4):
            item = (await claim(h, single["id"], key)).json()["item_id"]
            assert (await label(h, single["id"], item, key, labels=labels, note="hm")).status_code == 200
    pairwise = await make_queue(h, kind="pairwise", filter={"template": "animal"},
                                sampling={"size": 10, "random_share": 0})
    await fill(h, pairwise["id"])
    while (response := await claim(h, pairwise["id"], ann)).status_code == 200:
        await label(h, pairwise["id"], response.json()["item_id"], ann, preferred="a")
    return {"outputs": outputs, "single": single["id"], "pairwise": pairwise["id"]}


async def lines(h: Harness, path: str) -> list[dict[str, Any]]:
    response = await h.client.get(path, headers=auth(h.secret_key))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-ndjson"
    return [json.loads(line) for line in response.text.splitlines()]


async def test_every_line_of_every_format_validates_and_pairs_share_a_prompt(harness):
    seeded = await seed(harness)
    prompt_of = {output: prompt for prompt, output in seeded["outputs"].values()}
    evals = await lines(harness, "/v1/exports/evals")
    for line in evals:
        msgspec.convert(line, EvalLine)
    assert {line["trace_id"] for line in evals} == {"colour-0", "colour-1", "colour-2", "colour-3"}
    first = next(line for line in evals if line["trace_id"] == "colour-0")
    assert first["labels"] == ["tone", "too_long"] and first["notes"] == ["hm", "hm"]  # half of two is enough
    assert first["vote"] == "up" and first["input"] == "Name a colour" and first["template"] == "colour"
    second = next(line for line in evals if line["trace_id"] == "colour-1")
    assert (second["vote"], second["reason"], second["comment"]) == ("down", "too_long", "meh")

    for format, schema in SCHEMAS.items():
        found = await lines(harness, f"/v1/exports/preferences?format={format}")
        assert found, format
        for line in found:
            msgspec.convert(line, schema)
        if format == "trl_unpaired":
            labelled = {line["completion"][0]["content"]: line["label"] for line in found}
            assert labelled == {"colour #0": True, "colour #1": False, "colour #3": False, "animal #2": True}
            continue
        for line in found:
            chosen, rejected = ((line["chosen"], line["rejected"]) if format == "trl"
                                else (line["preferred_output"], line["non_preferred_output"]))
            assert prompt_of[chosen[0]["content"]] == prompt_of[rejected[0]["content"]]  # never across prompts
    trl = await lines(harness, "/v1/exports/preferences?format=trl")
    pairs = {(line["chosen"][0]["content"], line["rejected"][0]["content"]) for line in trl}
    # Votes: colour #0 up against the two downs; the regeneration colour #3 answers the same prompt.
    assert {("colour #0", "colour #1"), ("colour #0", "colour #3")} <= pairs
    animal = [line for line in trl if line["chosen"][0]["content"].startswith("animal")]
    assert animal and all(line["prompt"] == PROMPTS["animal"] for line in animal)
    assert ("animal #2", "animal #1") not in pairs  # animal #1's only vote is the flagged session's


async def test_exports_read_in_chunks_give_the_same_lines(harness, monkeypatch):
    await seed(harness)
    paths = ["/v1/exports/evals"] + [f"/v1/exports/preferences?format={f}" for f in SCHEMAS]
    whole = [await lines(harness, path) for path in paths]
    monkeypatch.setattr(stream, "CHUNK", 1)
    assert [await lines(harness, path) for path in paths] == whole


async def test_evals_of_one_queue_and_a_time_range(harness):
    seeded = await seed(harness)
    assert len(await lines(harness, f"/v1/exports/evals?queue={seeded['single']}")) == 4
    assert await lines(harness, f"/v1/exports/evals?queue={seeded['pairwise']}") == []  # pairwise: preferences
    assert await lines(harness, "/v1/exports/evals?until=1") == []
    assert len(await lines(harness, "/v1/exports/evals?since=1d")) == 4


@pytest.mark.parametrize("path,status", [
    ("/v1/exports/preferences?format=csv", 400),
    ("/v1/exports/evals?since=yesterday", 400),
    ("/v1/exports/preferences?until=soon", 400),
    ("/v1/exports/evals?since=99999999999999999999999", 400),
    ("/v1/exports/evals?queue=q_nope", 404),
])
async def test_bad_export_queries(harness, path, status):
    response = await harness.client.get(path, headers=auth(harness.secret_key))
    assert response.status_code == status and response.headers["content-type"] == "application/problem+json"


async def test_the_trl_file_loads_with_the_datasets_library(harness, tmp_path):
    datasets = pytest.importorskip("datasets")
    await seed(harness)
    response = await harness.client.get("/v1/exports/preferences?format=trl", headers=auth(harness.secret_key))
    path = tmp_path / "trl.jsonl"
    path.write_bytes(response.content)
    loaded = await asyncio.to_thread(datasets.load_dataset, "json", data_files=str(path), split="train",
                                     cache_dir=str(tmp_path / "cache"))
    assert set(loaded.column_names) == {"prompt", "chosen", "rejected"}
    assert len(loaded) == len(response.text.splitlines())


# --- The CLI ---

def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def test_cli_reviewers_labels_and_exports(harness, tmp_path, capsys):
    await seed(harness)
    db = ["--project", harness.public_key, "--db", harness.db]

    def cli(*argv: str) -> tuple[int, str, str]:
        return run_cli(capsys, *argv)

    code, out, _ = await asyncio.to_thread(cli, "reviewer", "add", "--name", "cara", *db)
    key = json.loads(out)["reviewer_key"]
    assert code == 0 and key.startswith("rk_") and json.loads(out)["name"] == "cara"
    queue = await make_queue(harness, sampling={"size": 1, "random_share": 0})
    await fill(harness, queue["id"])
    assert (await claim(harness, queue["id"], key)).status_code == 200
    with pytest.raises(SystemExit, match="already has a reviewer named 'cara'"):
        await asyncio.to_thread(cli, "reviewer", "add", "--name", "cara", *db)
    capsys.readouterr()
    code, out, _ = await asyncio.to_thread(cli, "reviewer", "list", *db)
    listed = [json.loads(line) for line in out.splitlines()]
    assert [r["name"] for r in listed] == ["ann", "bob", "cara"] and "rk_" not in out
    assert (await asyncio.to_thread(cli, "reviewer", "revoke", "--name", "cara", *db))[0] == 0
    assert (await claim(harness, queue["id"], key)).status_code == 401

    code, out, _ = await asyncio.to_thread(cli, "labels", "set", "--label", "wrong", "--label", "rude", *db)
    assert json.loads(out) == {"labels": ["wrong", "rude"]}
    response = await harness.client.get(f"/v1/projects/{harness.public_key}/labels", headers=auth(harness.secret_key))
    assert response.json() == {"labels": ["wrong", "rude"]}
    with pytest.raises(SystemExit):  # argparse refuses the label
        await asyncio.to_thread(cli, "labels", "set", "--label", "Not A Label", *db)
    capsys.readouterr()

    for argv, path in ((["evals"], "/v1/exports/evals"),
                       (["preferences", "--format", "openai"], "/v1/exports/preferences?format=openai")):
        out_file = tmp_path / f"{argv[0]}.jsonl"
        code, out, err = await asyncio.to_thread(cli, "export", *argv, *db, "--out", str(out_file))
        api = await lines(harness, path)
        assert code == 0 and json.loads(out) == {"out": str(out_file), "lines": len(api)}
        assert [json.loads(line) for line in out_file.read_text().splitlines()] == api
        assert f"{len(api)}/{len(api)}" in err if argv == ["evals"] else f"{len(api)} lines" in err  # progress
    assert not list(Path(tmp_path).glob("*.partial"))
