"""The fast flush service: per-destination logs of deferred mail, flushing
them, their upkeep, and who may ask (services/flush.py)."""

from __future__ import annotations

import os

import pytest

from pymaster.mail import flush_client, queue
from services.flush import FastFlush, log_path
from tests.support.queue_fixtures import add_message, make_spool, reset_logging


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def flush(tmp_path, monkeypatch):
    cfg = make_spool(tmp_path, monkeypatch, "relay_domains = example.org, .example.net\n")
    wakes = []
    service = FastFlush(cfg, wake=lambda: wakes.append(1), clock=Clock())
    service.wakes = wakes
    yield service
    reset_logging()


def test_add_logs_the_queue_id_per_site(flush):
    qid = add_message("deferred")
    assert flush.handle({"op": "add", "site": "Example.ORG", "queue_id": qid}) == {"status": "ok"}
    assert open(log_path("example.org")).read() == f"{qid}\n"


def test_send_site_requeues_the_deferred_messages_and_wakes_qmgr(flush):
    first, second = add_message("deferred"), add_message("deferred")
    for qid in (first, second, first):
        flush.handle({"op": "add", "site": "example.org", "queue_id": qid})
    assert flush.handle({"op": "send_site", "site": "example.org"}) == {"status": "ok"}
    assert queue.find(first)[0] == "incoming" and queue.find(second)[0] == "incoming"
    assert flush.wakes == [1]
    assert os.path.getsize(log_path("example.org")) == 0      # logged again if deferred again


def test_messages_no_longer_deferred_are_skipped(flush):
    qid = add_message("deferred")
    flush.handle({"op": "add", "site": "example.org", "queue_id": qid})
    queue.move(qid, "deferred", "active")
    flush.handle({"op": "send_site", "site": "example.org"})
    assert queue.find(qid)[0] == "active"
    assert flush.wakes == []


def test_eligibility_follows_fast_flush_domains(flush):
    qid = add_message("deferred")
    assert flush.handle({"op": "send_site", "site": "other.example"}) == {"status": "deny"}
    assert flush.handle({"op": "add", "site": "other.example", "queue_id": qid}) == \
        {"status": "deny"}
    # $relay_domains matches subdomains (parent_domain_matches_subdomains).
    assert flush.handle({"op": "send_site", "site": "mx.example.net"}) == {"status": "ok"}
    assert not os.path.exists(log_path("other.example"))


@pytest.mark.parametrize("site", ["", "../etc", ".hidden", "a/b", "x" * 300])
def test_bad_sites(flush, site):
    assert flush.handle({"op": "send_site", "site": site}) == {"status": "bad"}


def test_send_file_requeues_one_message(flush):
    qid = add_message("deferred")
    assert flush.handle({"op": "send_file", "queue_id": qid}) == {"status": "ok"}
    assert queue.find(qid)[0] == "incoming"
    assert flush.handle({"op": "send_file", "queue_id": "../x"}) == {"status": "bad"}


def test_refresh_flushes_unread_logs_and_purges_empty_ones(flush):
    clock = flush.clock
    qid = add_message("deferred")
    flush.handle({"op": "add", "site": "example.org", "queue_id": qid})
    os.utime(log_path("example.org"), (clock.now, clock.now))
    open(log_path("example.net"), "w").close()
    os.utime(log_path("example.net"), (clock.now, clock.now))

    flush.handle({"op": "wakeup"})                       # nothing is old yet
    assert queue.find(qid)[0] == "deferred"
    clock.now += flush.refresh_time
    flush.handle({"op": "refresh"})
    assert queue.find(qid)[0] == "incoming"
    assert os.path.exists(log_path("example.net"))      # empty, but not for long enough
    clock.now += flush.purge_time
    flush.handle({"op": "refresh"})
    assert not os.path.exists(log_path("example.net"))


def test_purge_flushes_every_log(flush):
    qid = add_message("deferred")
    flush.handle({"op": "add", "site": "example.org", "queue_id": qid})
    flush.handle({"op": "purge"})
    assert queue.find(qid)[0] == "incoming"


def test_valid_site():
    assert flush_client.valid_site("example.org")
    assert flush_client.valid_site("[192.0.2.1]")
    assert flush_client.valid_site("[ipv6:2001:db8::1]")
    assert not flush_client.valid_site("a..b")
