"""Address verification: the verify service's cache rules, its requests, its
client, the agents' side of a probe and smtpd's reject_unverified_* replies.

The cache rules are those of Postfix's verify(8) and postconf(5)
address_verify_*; times are driven by a clock the test sets.
tests/e2e/test_address_verification.py runs the whole thing with a real master."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest

from pymaster.mail import delivery, queue, records, verify_client
from pymaster.util import ipc, log
from pymaster.mail.config import Config, default_config, load_config
from pymaster.mail.verify_client import BOUNCE, DEFER, OK, TODO, VerifyClient, VerifyError
from services.smtpd.check import Checker, Context
from pymaster.mail.verify_sender import SenderError, stamp
from services.verify import ProbeSender, make_handler, probe_sender
from services.verify.cache import CacheError, Entry, VerifyCache, cache_path
from services.verify.policy import IN_PROGRESS, PROBE_TTL, Settings, Verifier
from tests.support.served import ServedHandler

HOUR, DAY = 3600, 86400
T0 = 1_700_000_000


# The verify policy of an empty main.cf: the parameter table's defaults.
DEFAULTS = Settings.from_config(default_config())


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Probes:
    """send_probe: records the addresses probed; answers as told."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.works = True

    def __call__(self, address: str) -> bool:
        self.sent.append(address)
        return self.works


def verifier(cache=None, **settings) -> tuple[Verifier, Clock, Probes]:
    clock, probes = Clock(), Probes()
    v = Verifier(replace(DEFAULTS, **settings), cache or VerifyCache(None), probes, clock)
    return v, clock, probes


# -- the cache rules -------------------------------------------------------------------

class TestQuery:
    def test_unknown_address_is_in_progress_and_probed_once(self):
        v, clock, probes = verifier()
        assert v.query("joe@example.com") == (TODO, IN_PROGRESS)
        clock.advance(5)
        assert v.query("joe@example.com") == (TODO, IN_PROGRESS)
        assert probes.sent == ["joe@example.com"]

    def test_verdict_is_the_answer_until_refresh_then_stale_while_probing(self):
        v, clock, probes = verifier()
        v.query("joe@example.com")
        v.update("joe@example.com", OK, "delivers to maildir")
        clock.advance(7 * DAY)
        assert v.query("joe@example.com") == (OK, "delivers to maildir")
        assert probes.sent == ["joe@example.com"]          # not yet older than 7d
        clock.advance(1)
        assert v.query("joe@example.com") == (OK, "delivers to maildir")
        assert v.query("joe@example.com") == (OK, "delivers to maildir")
        assert probes.sent == ["joe@example.com"] * 2       # one refresh probe in flight

    def test_positive_answer_expires_after_31_days(self):
        v, clock, probes = verifier()
        v.update("joe@example.com", OK, "ok")
        clock.advance(31 * DAY + 1)
        assert v.query("joe@example.com") == (TODO, IN_PROGRESS)
        assert probes.sent == ["joe@example.com"]

    def test_negative_answer_refreshes_after_3h_and_expires_after_3d(self):
        v, clock, probes = verifier()
        v.update("nobody@example.com", BOUNCE, "unknown user")
        clock.advance(3 * HOUR)
        assert v.query("nobody@example.com") == (BOUNCE, "unknown user")
        assert probes.sent == []
        clock.advance(1)
        assert v.query("nobody@example.com") == (BOUNCE, "unknown user")
        assert probes.sent == ["nobody@example.com"]
        v.update("nobody@example.com", DEFER, "host down")
        clock.advance(3 * DAY + 1)
        assert v.query("nobody@example.com") == (TODO, IN_PROGRESS)

    def test_lost_probe_is_sent_again_after_its_ttl(self):
        v, clock, probes = verifier()
        v.query("joe@example.com")
        clock.advance(PROBE_TTL + 1)
        v.query("joe@example.com")
        assert probes.sent == ["joe@example.com"] * 2

    def test_probe_cleanup_refused_is_tried_at_the_next_query(self):
        v, clock, probes = verifier()
        probes.works = False
        v.query("joe@example.com")
        probes.works = True
        v.query("joe@example.com")
        v.query("joe@example.com")
        assert probes.sent == ["joe@example.com"] * 2

    def test_pending_request_limit_stops_new_probes(self):
        v, clock, probes = verifier(pending_limit=1)
        v.query("a@example.com")
        assert v.query("b@example.com") == (TODO, IN_PROGRESS)
        assert probes.sent == ["a@example.com"]
        v.update("a@example.com", OK, "ok")
        v.query("b@example.com")
        assert probes.sent == ["a@example.com", "b@example.com"]

    def test_addresses_are_folded_to_lower_case(self):
        v, clock, probes = verifier()
        v.update("Joe@Example.COM", OK, "ok")
        assert v.query("joe@example.com") == (OK, "ok")


class TestUpdate:
    def test_failed_probe_does_not_clobber_a_good_answer(self):
        v, clock, probes = verifier()
        v.update("joe@example.com", OK, "ok")
        clock.advance(8 * DAY)
        v.query("joe@example.com")                          # refresh probe
        assert v.update("joe@example.com", DEFER, "timeout") is True
        assert v.query("joe@example.com") == (OK, "ok")
        assert probes.sent == ["joe@example.com"] * 2       # probed again at once

    def test_without_negative_cache_failures_are_not_kept(self):
        v, clock, probes = verifier(negative_cache=False)
        assert v.query("nobody@example.com") == (TODO, IN_PROGRESS)
        assert v.query("nobody@example.com") == (TODO, IN_PROGRESS)
        assert probes.sent == ["nobody@example.com"]        # one in flight, in memory
        assert v.cache.get("nobody@example.com") is None
        assert v.update("nobody@example.com", BOUNCE, "unknown user") is False
        assert v.query("nobody@example.com") == (TODO, IN_PROGRESS)
        assert probes.sent == ["nobody@example.com"] * 2
        assert v.update("joe@example.com", OK, "ok") is True


class TestCleanup:
    def test_expired_rows_go_every_interval(self):
        v, clock, probes = verifier(cleanup_interval=12 * HOUR)
        v.update("old@example.com", BOUNCE, "unknown user")
        clock.advance(3 * DAY + 1)
        v.update("new@example.com", OK, "ok")
        v.query("fresh@example.com")                        # probe in flight: kept
        assert v.cleanup_due() == (2, 1)
        assert v.cache.get("old@example.com") is None
        assert v.cleanup_due() is None                      # not due again yet

    def test_zero_interval_never_cleans(self):
        v, clock, probes = verifier(cleanup_interval=0)
        clock.advance(100 * DAY)
        assert v.cleanup_due() is None


# -- the cache file ----------------------------------------------------------------------

class TestCacheFile:
    @pytest.mark.parametrize("spec, path", [
        ("", None),
        ("btree:/var/lib/postfix/verify_cache", "/var/lib/postfix/verify_cache.sqlite"),
        ("proxy:btree:/var/lib/postfix/verify_cache", "/var/lib/postfix/verify_cache.sqlite"),
        ("hash:/d/v", "/d/v.sqlite"),
    ])
    def test_map_names_a_sqlite_file(self, spec, path):
        assert cache_path(spec) == path

    @pytest.mark.parametrize("spec, why", [
        ("mysql:/etc/postfix/v.cf", "unsupported map type"),
        ("btree:verify_cache", "absolute path"),
        ("verify_cache", "need type:name"),
    ])
    def test_bad_map_is_a_clear_error(self, spec, why):
        with pytest.raises(CacheError, match=why):
            cache_path(spec)

    def test_restart_keeps_the_cache(self, tmp_path):
        path = str(tmp_path / "verify_cache.sqlite")
        v, clock, probes = verifier(VerifyCache(path))
        v.query("joe@example.com")
        v.update("joe@example.com", OK, "delivers to maildir")
        v.cache.close()
        again, _, probes2 = verifier(VerifyCache(path))
        assert again.query("joe@example.com") == (OK, "delivers to maildir")
        assert probes2.sent == []

    def test_a_probe_in_flight_survives_a_restart(self, tmp_path):
        path = str(tmp_path / "verify_cache.sqlite")
        v, clock, probes = verifier(VerifyCache(path))
        v.query("joe@example.com")
        v.cache.close()
        again, _, probes2 = verifier(VerifyCache(path))
        assert again.query("joe@example.com") == (TODO, IN_PROGRESS)
        assert probes2.sent == []

    def test_not_a_database_is_a_clear_error(self, tmp_path):
        path = tmp_path / "verify_cache.sqlite"
        path.write_bytes(b"this is a Berkeley DB file, honestly\n" * 100)
        with pytest.raises(CacheError, match="verify_cache.sqlite"):
            VerifyCache(str(path))


# -- the requests --------------------------------------------------------------------------

class TestRequests:
    def setup_method(self):
        self.v, self.clock, self.probes = verifier()
        self.handle = make_handler(self.v)

    def test_query_and_update(self):
        assert self.handle({"op": "query", "address": "a@example.com"}, [])[0] == {
            "status": "ok", "addr_status": TODO, "reason": IN_PROGRESS}
        assert self.handle({"op": "update", "address": "a@example.com", "addr_status": BOUNCE,
                            "reason": "unknown user"}, [])[0] == {"status": "ok", "cached": True}
        assert self.handle({"op": "query", "address": "a@example.com"}, [])[0] == {
            "status": "ok", "addr_status": BOUNCE, "reason": "unknown user"}

    @pytest.mark.parametrize("header, why", [
        ({"op": "purge", "address": "a@example.com"}, "unknown request"),
        ({"op": "query"}, "missing address"),
        ({"op": "query", "address": ["a"]}, "missing address"),
        ({"op": "update", "address": "a@example.com", "addr_status": TODO}, "bad address status"),
    ])
    def test_bad_requests_get_an_error(self, header, why, monkeypatch):
        monkeypatch.setattr(log, "warning", lambda text: None)
        reply = self.handle(header, [])[0]
        assert reply["status"] == "error" and why in reply["reason"]


def test_probe_sender_is_qualified_with_myorigin(tmp_path):
    cfg = Config(str(tmp_path), {"myhostname": "mx.example.com"})
    assert probe_sender(cfg) == "double-bounce@mx.example.com"
    assert probe_sender(cfg.with_overrides({"address_verify_sender": "<>"})) == ""
    assert probe_sender(cfg.with_overrides({"address_verify_sender": "probe@x.example"})) == \
        "probe@x.example"


class FakeCleanup:
    """The cleanup client of ProbeSender: keeps each request, says ok."""

    def __init__(self) -> None:
        self.requests: list[dict] = []

    def call(self, header: dict, frames: list) -> tuple[dict, list]:
        self.requests.append(header)
        return {"status": "ok", "queue_id": "PROBE1"}, []


def test_probes_carry_the_time_stamped_sender_of_their_moment(tmp_path, monkeypatch):
    cfg = Config(str(tmp_path), {"myhostname": "mx.example.com",
                                 "address_verify_sender_ttl": "1h"})
    cleanup = FakeCleanup()
    sender = ProbeSender(cfg, cleanup)
    for now in (T0, T0 + HOUR):
        monkeypatch.setattr("services.verify.time.time", lambda now=now: now)
        assert sender.send("joe@example.com")
    first, second = (r["sender"] for r in cleanup.requests)
    assert first == f"double-bounce{stamp(T0 // HOUR)}@mx.example.com"
    assert second == f"double-bounce{stamp(T0 // HOUR + 1)}@mx.example.com"
    assert cleanup.requests[0]["attrs"]["trace_flags"] == "verify,probe"


def test_a_malformed_probe_sender_is_refused_at_start(tmp_path):
    cfg = Config(str(tmp_path), {"address_verify_sender": "@example.com"})
    with pytest.raises(SenderError, match="must not start with '@'"):
        ProbeSender(cfg, FakeCleanup())


# -- the client, against the real handler over zeromq --------------------------------------

@pytest.fixture
def verify_endpoint(tmp_path, monkeypatch):
    """private/verify answered by services.verify's handler (no master: the
    test listens on the socket and serves its leases, as a verify worker does)."""
    queue.create_layout(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    probes = Probes()
    box: dict = {}

    def handler(header, payload):
        # SQLite objects stay in the thread that made them, as in the one-threaded service.
        if "handle" not in box:
            box["handle"] = make_handler(Verifier(DEFAULTS, VerifyCache(None), probes, Clock()))
        return box["handle"](header, payload)

    served = ServedHandler(ipc.endpoint("private", "verify"), handler, many=True)
    yield probes
    served.close()


class TestClient:
    def test_query_update_and_poll(self, verify_endpoint):
        probes = verify_endpoint
        client = VerifyClient(None, timeout=10)
        naps = []

        def nap(seconds):
            naps.append(seconds)
            if len(naps) == 2:      # the probe's verdict arrives meanwhile
                client.update("a@example.com", BOUNCE, "unknown user")
        assert client.poll("a@example.com", 5, 1, sleep=nap) == (BOUNCE, "unknown user")
        assert naps == [1, 1] and probes.sent == ["a@example.com"]
        assert client.poll("b@example.com", 3, 2, sleep=naps.append) == (TODO, IN_PROGRESS)
        assert naps == [1, 1, 2, 2]

    def test_no_service_socket_fails_at_once(self, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        with pytest.raises(VerifyError, match="verify service is not available"):
            VerifyClient(None).query("a@example.com")


# -- the agent's side: a probe's verdict ------------------------------------------------------

@pytest.fixture
def spool(tmp_path, monkeypatch):
    queue.create_layout(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def probe_request(addresses: list[str]) -> delivery.DeliveryRequest:
    w = queue.create("active")
    w.write_envelope(1000.0, "double-bounce@mx.example.com",
                     [records.Recipient(a, orig=a) for a in addresses],
                     {"trace_flags": "verify,probe"})
    w.write_content([b""])
    queue_id = w.commit()
    path = queue.path_of("active", queue_id)
    msg = records.read_message(path)
    return delivery.DeliveryRequest(queue_id=queue_id, path=path, transport="virtual",
                                    nexthop="localhost", sender=msg.sender,
                                    recipients=msg.pending(), attrs=dict(msg.attrs))


class TestProbeVerdicts:
    def test_verdicts_go_to_the_verify_service_not_to_a_report(self, spool, monkeypatch):
        told, lines = [], []
        monkeypatch.setattr(verify_client, "report_probe",
                            lambda cfg, address, orig, status, reason:
                            told.append((address, status, reason)) or True)
        monkeypatch.setattr(log, "info", lines.append)
        req = probe_request(["joe@localhost", "nobody@localhost", "slow@localhost"])
        assert delivery.is_verify(req) and delivery.is_probe(req)
        status = delivery.Status(req)
        joe, nobody, slow = req.recipients
        status.sent(joe, "virtual", "delivers to maildir")
        status.bounced(nobody, "virtual", 'unknown user: "nobody@localhost"', "5.1.1")
        status.deferred(slow, "virtual", "mailbox busy", "4.2.0")
        assert told == [("joe@localhost", OK, "delivers to maildir"),
                        ("nobody@localhost", BOUNCE, 'unknown user: "nobody@localhost"'),
                        ("slow@localhost", DEFER, "mailbox busy")]
        assert [line.rsplit("status=", 1)[1].split()[0] for line in lines] == [
            "deliverable", "undeliverable", "undeliverable"]
        for log_path in (queue.trace_log_path, queue.bounce_log_path, queue.defer_log_path):
            assert not os.path.exists(log_path(req.queue_id))
        assert records.read_message(req.path).pending() == []

    def test_sendmail_bv_is_not_a_probe(self, spool):
        req = probe_request(["joe@localhost"])
        req.attrs["trace_flags"] = "verify"
        assert delivery.is_verify(req) and not delivery.is_probe(req)

    def test_negative_verdict_not_cached_is_logged_so(self, spool, monkeypatch):
        lines = []
        monkeypatch.setattr(verify_client, "report_probe", lambda *args: False)
        monkeypatch.setattr(log, "info", lines.append)
        req = probe_request(["nobody@localhost"])
        delivery.Status(req).bounced(req.recipients[0], "virtual", "unknown user", "5.1.1")
        assert "status=undeliverable-but-not-cached (unknown user)" in lines[0]

    def test_verify_service_down_defers_the_probe(self, spool, monkeypatch):
        lines = []
        monkeypatch.setattr(log, "info", lines.append)
        monkeypatch.setattr(log, "warning", lines.append)
        req = probe_request(["joe@localhost"])
        status = delivery.Status(req)
        status.sent(req.recipients[0], "virtual", "delivers to maildir")
        assert "verify service failure" in lines[0]
        assert "status=deferred (address verification service failure)" in lines[1]
        assert records.read_message(req.path).pending() != []
        assert status.reply()[0]["results"][0]["status"] == "deferred"


# -- smtpd: reject_unverified_recipient / reject_unverified_sender ---------------------------

class Answers:
    """client_for(cfg) stand-in: poll() answers what the test says, records its arguments."""

    def __init__(self, answer) -> None:
        self.answer = answer
        self.polls: list[tuple] = []

    def poll(self, address, count, delay):
        self.polls.append((address, count, delay))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def checker(tmp_path, monkeypatch, answer, **settings) -> tuple[Checker, Answers]:
    values = {"myhostname": "mx.example.com", "mynetworks": "127.0.0.0/8",
              "maillog_file": str(tmp_path / "maillog"),
              "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
              "smtpd_recipient_restrictions": "reject_unverified_recipient", **settings}
    (tmp_path / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in values.items()))
    cfg = load_config(str(tmp_path))
    log.setup("smtpd", cfg)
    answers = Answers(answer)
    monkeypatch.setattr(verify_client, "client_for", lambda cfg: answers)
    return Checker(cfg), answers


def rcpt(c: Checker, recipient="joe@example.com", sender="s@example.org") -> str | None:
    return c.check_rcpt(Context("localhost", "127.0.0.1", "client.example", sender, recipient))


SAID = "host mx.example.com[192.0.2.9] said: 550 5.1.1 <joe@example.com>... User unknown " \
       "(in reply to RCPT TO command)"


class TestSmtpdReplies:
    def test_in_progress(self, tmp_path, monkeypatch):
        c, answers = checker(tmp_path, monkeypatch, (TODO, IN_PROGRESS),
                             address_verify_poll_count="4", address_verify_poll_delay="2s")
        assert rcpt(c) == "450 4.1.1 <joe@example.com>: Recipient address rejected: " \
            "unverified address: Address verification in progress"
        assert answers.polls == [("joe@example.com", 4, 2)]

    def test_bounce_gives_the_probe_reason(self, tmp_path, monkeypatch):
        c, _ = checker(tmp_path, monkeypatch, (BOUNCE, SAID))
        assert rcpt(c) == "450 4.1.1 <joe@example.com>: Recipient address rejected: " \
            f"unverified address: {SAID}"

    def test_bounce_with_a_5xx_reject_code(self, tmp_path, monkeypatch):
        c, _ = checker(tmp_path, monkeypatch, (BOUNCE, SAID),
                       unverified_recipient_reject_code="550")
        assert rcpt(c) == "550 5.1.1 <joe@example.com>: Recipient address rejected: " \
            f"undeliverable address: {SAID}"

    def test_defer_code_and_reject_reason(self, tmp_path, monkeypatch):
        c, _ = checker(tmp_path, monkeypatch, (DEFER, "connection timed out"),
                       unverified_recipient_defer_code="451",
                       unverified_recipient_reject_reason="Recipient address lookup failed")
        assert rcpt(c) == "451 4.1.1 <joe@example.com>: Recipient address rejected: " \
            "unverified address: Recipient address lookup failed"

    def test_deliverable_passes(self, tmp_path, monkeypatch):
        c, _ = checker(tmp_path, monkeypatch, (OK, "delivers to maildir"))
        assert rcpt(c) is None

    def test_sender(self, tmp_path, monkeypatch):
        c, answers = checker(tmp_path, monkeypatch, (BOUNCE, "unknown user"),
                             smtpd_recipient_restrictions="",
                             smtpd_sender_restrictions="reject_unverified_sender")
        assert rcpt(c) == "450 4.1.7 <s@example.org>: Sender address rejected: " \
            "unverified address: unknown user"
        assert rcpt(c, sender="") is None
        assert [p[0] for p in answers.polls] == ["s@example.org"]

    def test_a_4xx_answer_lets_a_later_reject_win(self, tmp_path, monkeypatch):
        # defer_if_permit (unverified_*_tempfail_action): refused only if nothing else refuses.
        c, _ = checker(tmp_path, monkeypatch, (BOUNCE, "unknown user"),
                       smtpd_recipient_restrictions="reject_unverified_recipient, reject")
        assert rcpt(c).startswith("554 5.7.1 <joe@example.com>: Recipient address rejected: "
                                  "Access denied")
        c, _ = checker(tmp_path, monkeypatch, (BOUNCE, "unknown user"),
                       smtpd_recipient_restrictions="reject_unverified_recipient, reject",
                       unverified_recipient_tempfail_action="defer")
        assert rcpt(c).startswith("450 4.1.1 <joe@example.com>: Recipient address rejected: "
                                  "unverified address: unknown user")

    def test_service_failure(self, tmp_path, monkeypatch):
        c, _ = checker(tmp_path, monkeypatch, VerifyError("timeout"))
        assert rcpt(c) == "450 4.1.1 <joe@example.com>: Recipient address rejected: " \
            "address verification problem"
        assert "warning: verify service failure: timeout" in (tmp_path / "maillog").read_text()

    def test_runs_off_the_event_loop(self, tmp_path, monkeypatch):
        c, _ = checker(tmp_path, monkeypatch, (OK, ""))
        assert c.blocks


# -- hostile input and a broken cache (security review) --------------------------------

class TestHostileAddresses:
    def test_a_flood_of_random_addresses_probes_at_most_the_pending_limit(self, tmp_path):
        cache = VerifyCache(str(tmp_path / "verify_cache.sqlite"))
        v, clock, probes = verifier(cache, pending_limit=25)
        answers = {v.query(f"r{n}x{n * 7919}@example.com") for n in range(1000)}
        assert answers == {(TODO, IN_PROGRESS)} and len(probes.sent) == 25
        # Addresses left unprobed are not written: the map grows with probes only.
        assert cache.sweep(lambda e: True) == (25, 0)

    def test_expired_answers_of_the_flood_are_swept(self):
        v, clock, probes = verifier(pending_limit=0, cleanup_interval=HOUR)
        for n in range(50):
            v.query(f"r{n}@example.com")
            v.update(f"r{n}@example.com", BOUNCE, "no such user")
        clock.advance(3 * DAY + 1)
        assert v.cleanup_due() == (0, 50)

    @pytest.mark.parametrize("address", [
        '"john smith"@example.com', 'a\0b@example.com', "x" * 100_000 + "@example.com",
        "'; DROP TABLE entries; --@example.com", "j\udcf6rg@example.com", "\ud800@x",
    ])
    def test_any_address_is_stored_and_answered_never_a_failure(self, tmp_path, address):
        cache = VerifyCache(str(tmp_path / "verify_cache.sqlite"))
        v, clock, probes = verifier(cache)
        assert v.query(address) == (TODO, IN_PROGRESS)
        assert v.update(address, BOUNCE, f"unknown user {address}")
        assert v.query(address)[0] == BOUNCE
        assert cache.get("other@example.com") is None


class TestCacheSafety:
    def test_a_new_cache_and_its_journal_are_private(self, tmp_path):
        path = tmp_path / "verify_cache.sqlite"
        old = os.umask(0o022)
        try:
            cache = VerifyCache(str(path))
            cache.put("a@example.com", Entry(OK, 0, T0, "ok"))
            assert os.umask(0o022) == 0o022     # the process's own umask is back
        finally:
            os.umask(old)
        modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
        assert modes["verify_cache.sqlite"] == 0o600
        assert set(modes.values()) == {0o600}
        cache.close()

    def test_a_corrupt_cache_warns_and_answers_errors_instead_of_exiting(self, tmp_path):
        from services import verify

        path = tmp_path / "verify_cache"
        (tmp_path / "verify_cache.sqlite").write_bytes(b"garbage, not SQLite\n" * 100)
        cfg = Config(str(tmp_path), {"myhostname": "mx.example.com",
                                     "address_verify_map": f"btree:{path}",
                                     "maillog_file": str(tmp_path / "maillog")})
        log.setup("verify", cfg)

        class Svc:
            handler = None

            def enter_jail(self, pre_jail):
                return pre_jail(self)

            def serve_requests(self, handler, many=False):
                Svc.handler = handler
                Svc.many = many

        svc = Svc()
        svc.cfg = cfg
        verify.run(svc)                 # returns: no SystemExit
        reply, _ = Svc.handler({"op": "query", "address": "a@example.com"}, [])
        assert reply["status"] == "error" and "address verification cache" in reply["reason"]
        assert Svc.many                 # verify serves many clients at once, as Postfix's
        text = (tmp_path / "maillog").read_text()
        assert "warning: address_verify_map btree:" in text and "fatal" not in text
