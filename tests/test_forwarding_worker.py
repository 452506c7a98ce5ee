"""gateway/forwarding/worker.py: what a round sends (plan) and what it records (settle), as plain values."""

from __future__ import annotations

import uuid

import pytest

from gateway.backoff import Backoff
from gateway.forwarding import Dead, Delivered, OutboxRecord, Retry
from gateway.forwarding.worker import plan, settle
from gateway.store.outbox import Parked, Pending, Retried

NOW = 1_000_000.0


def row(seq: int, trace: int, next_try_at: float = 0.0, attempts: int = 0, first: float | None = None) -> Pending:
    record = OutboxRecord(seq=seq, event_id=str(uuid.UUID(int=seq)), project="pk_x", trace_id=f"t{trace}",
                          session_id="s", type="feedback", ts=1, value=1)
    return Pending(record, trace, attempts, first, next_try_at)


def seqs(rows: list[Pending]) -> list[int]:
    return [r.record.seq for r in rows]


def test_plan_sends_due_rows_in_commit_order():
    batch, next_due = plan([row(1, 1), row(2, 2), row(3, 1)], NOW)
    assert seqs(batch) == [1, 2, 3] and next_due is None


def test_plan_holds_back_a_trace_behind_its_waiting_record_but_not_other_traces():
    rows = [row(1, 1, next_try_at=NOW + 5), row(2, 2), row(3, 1), row(4, 2), row(5, 3, next_try_at=NOW + 2)]
    batch, next_due = plan(rows, NOW)
    assert seqs(batch) == [2, 4]
    assert next_due == NOW + 2


def test_plan_stops_a_trace_at_its_first_waiting_record():
    batch, _ = plan([row(1, 1), row(2, 1, next_try_at=NOW + 1), row(3, 1)], NOW)
    assert seqs(batch) == [1]


def test_settle_deletes_delivered_reschedules_retries_and_parks_refusals():
    rows = [row(1, 1), row(2, 2, attempts=2, first=NOW - 60), row(3, 3), row(4, 4)]
    outcomes = {rows[0].record.event_id: Delivered(), rows[1].record.event_id: Retry("HTTP 503", NOW + 30),
                rows[2].record.event_id: Dead("HTTP 400", "bad score"), rows[3].record.event_id: Retry("refused")}
    settled = settle("dst_1", rows, outcomes, NOW, Backoff(base=1, cap=600), rand=lambda: 0.5)
    assert settled.delivered == [1]
    # The third failure: window 4 s, half of it is 2 s, but Retry-After says 30 s. The first try's time is kept.
    assert settled.retried == [Retried(2, 3, NOW - 60, NOW + 30), Retried(4, 1, NOW, NOW + 0.5)]
    assert settled.dead == [Parked(3, 1, "HTTP 400", "bad score")]
    assert settled.last_error == "refused"


def test_settle_gives_up_past_the_deadline():
    first = NOW - 72 * 3600 + 1
    rows = [row(1, 1, attempts=30, first=first)]
    settled = settle("dst_1", rows, {rows[0].record.event_id: Retry("HTTP 503")}, NOW, Backoff(), rand=lambda: 0.9)
    assert settled.retried == [] and settled.dead[0].seq == 1
    assert settled.dead[0].error.startswith("gave up after 31 tries: HTTP 503")


@pytest.mark.parametrize("url", ["ftp://x.example", "http://", "https://user:pw@x.example", "x.example/hook",
                                 "https://x.example/#frag", "https://x.example:99999/", "https://bad..host/",
                                 "https://x.example/a b"])
def test_check_url_refuses(url):
    from gateway.forwarding.destinations import check_url

    with pytest.raises(ValueError):
        check_url(url)


@pytest.mark.parametrize("url", ["https://cloud.langfuse.com", "http://127.0.0.1:3000", "https://[::1]:8443/hook",
                                 "https://hooks.example.com/services/T0/B0/x?y=1"])
def test_check_url_accepts(url):
    from gateway.forwarding.destinations import check_url

    assert check_url(url) == url
