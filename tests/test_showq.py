"""The showq service and postqueue's path through it.

Users who cannot read the spool get their listing from showq (public/showq,
running as the mail_owner). The interpreter here cannot be run by an
unprivileged user (it lives under /root), so instead of `runuser -u nobody
postqueue -p` these tests speak the showq protocol directly: showq's own
request handler served on a real zeromq endpoint, and postqueue made to
take that path as it does when reading the spool fails with EACCES. The
output must be the very same as the direct listing."""

from __future__ import annotations

import json

import pytest

from pymaster.mail import delivery, queue
from pymaster.util import ipc
from pymaster.commands import postqueue
from pymaster.mail.queuelist import Entry, list_queue
from services import showq
from tests.support.served import ServedHandler
from tests.support.queue_fixtures import add_message, make_spool, reset_logging


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    yield make_spool(tmp_path, monkeypatch)
    reset_logging()


class ShowqEndpoint(ServedHandler):
    """showq.handle served at public/showq (the test listens on its socket itself)."""

    def __init__(self) -> None:
        super().__init__(ipc.endpoint("public", "showq"), showq.handle)


def populate() -> list[str]:
    ids = [add_message("deferred", rcpts=("a@x.example", "b@y.example")),
           add_message("hold", sender=""),
           add_message("active", rcpts=("c@z.example",))]
    delivery.append_status_log(queue.defer_log_path(ids[0]), {
        "recipient": "a@x.example", "offset": "-1", "status": "4.4.1",
        "reason": "connect to x.example[192.0.2.1]:25: Connection refused"})
    return ids


class TestProtocol:
    def test_every_message_comes_back_as_an_entry(self, cfg):
        ids = populate()
        header, frames = showq.handle({"op": "list"}, [])
        assert header == {"status": "ok", "count": 3}
        entries = [Entry.from_dict(json.loads(line)) for f in frames for line in f.splitlines()]
        assert sorted(e.queue_id for e in entries) == sorted(ids)
        assert entries == list_queue()

    def test_large_listings_are_split_into_frames(self, cfg, monkeypatch):
        monkeypatch.setattr(showq, "FRAME_ENTRIES", 2)
        for _ in range(5):
            add_message("deferred")
        header, frames = showq.handle({"op": "list"}, [])
        assert header["count"] == 5 and len(frames) == 3

    def test_unknown_requests_are_refused(self, cfg):
        assert showq.handle({"op": "delete"}, [])[0]["status"] == "error"


class TestPostqueueThroughShowq:
    @pytest.fixture
    def unprivileged(self, cfg, monkeypatch):
        """postqueue as a user who cannot read the queue directories."""
        def no_access(*args, **kwargs):
            raise PermissionError(13, "Permission denied", "deferred")
        monkeypatch.setattr(postqueue, "spool_listing", no_access)
        monkeypatch.setattr(postqueue, "mail_system_up", lambda cfg: True)
        endpoint = ShowqEndpoint()
        yield
        endpoint.close()

    def direct(self, capsys, *args) -> str:
        assert postqueue.main(list(args)) == 0
        return capsys.readouterr().out

    @pytest.mark.parametrize("mode", ["-p", "-j"])
    def test_the_output_is_the_same_as_the_direct_listing(self, cfg, capsys, monkeypatch, mode):
        populate()
        expected = self.direct(capsys, mode)
        def no_access(*args, **kwargs):
            raise PermissionError(13, "Permission denied", "deferred")
        monkeypatch.setattr(postqueue, "spool_listing", no_access)
        monkeypatch.setattr(postqueue, "mail_system_up", lambda cfg: True)
        endpoint = ShowqEndpoint()
        try:
            assert self.direct(capsys, mode) == expected
        finally:
            endpoint.close()
        assert "(connect to x.example[192.0.2.1]:25: Connection refused)" in expected or mode == "-j"

    def test_an_empty_queue(self, cfg, capsys, unprivileged):
        assert self.direct(capsys, "-p") == "Mail queue is empty\n"

    def test_mail_system_down(self, cfg, capsys, monkeypatch):
        def no_access(*args, **kwargs):
            raise PermissionError(13, "Permission denied", "deferred")
        monkeypatch.setattr(postqueue, "spool_listing", no_access)
        with pytest.raises(SystemExit) as e:
            postqueue.main(["-p"])
        assert e.value.code == 69
        assert "Queue report unavailable - mail system is down" in capsys.readouterr().err

    def test_authorized_mailq_users_is_checked_first(self, tmp_path, monkeypatch, capsys):
        make_spool(tmp_path, monkeypatch, "authorized_mailq_users = nosuchuser\n")
        monkeypatch.setattr(postqueue.os, "getuid", lambda: 65534)
        with pytest.raises(SystemExit) as e:
            postqueue.main(["-p"])
        assert e.value.code == 77
        assert "is not allowed to view the mail queue" in capsys.readouterr().err
        reset_logging()


class TestUnprivilegedFlush:
    def test_site_and_id_flushes_become_qmgr_requests(self, cfg, monkeypatch):
        sent = []
        monkeypatch.setattr(postqueue, "mail_system_up", lambda cfg: True)
        monkeypatch.setattr(postqueue, "wake_qmgr", lambda cfg, header: sent.append(header))
        monkeypatch.setattr(postqueue.os, "access", lambda path, mode: False)
        qid = add_message("deferred")
        assert postqueue.main(["-s", "example.org"]) == 0
        assert postqueue.main(["-i", qid]) == 0
        assert sent == [{"op": "flush", "site": "example.org"},
                        {"op": "flush", "queue_id": qid}]
        assert queue.find(qid)[0] == "deferred"        # qmgr moves it, not postqueue
