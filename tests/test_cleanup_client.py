"""pymaster.mail.cleanup_client: the `message` request every mail-making service sends cleanup.

cleanup's side of the request is specified in tests/test_cleanup.py; the
services' use of it in tests/test_pickup.py, test_bounce.py and the local tests.
"""

from pymaster.mail import cleanup_client
from pymaster.util import ipc
from pymaster.mail.config import load_config


def test_the_request_header_has_the_contract_keys_and_any_extra_ones():
    header = cleanup_client.message_request(
        "me@example.org", [cleanup_client.recipient("you@example.net", "you@example.net")],
        {"origin": "test"}, ("extract",), arrival_time=5.0)
    assert header == {"op": "message", "sender": "me@example.org",
                      "recipients": [{"address": "you@example.net", "orig": "you@example.net",
                                      "notify": "", "orcpt": ""}],
                      "attrs": {"origin": "test"}, "flags": ["extract"], "arrival_time": 5.0}


def test_a_reply_reads_with_absent_fields_empty():
    reply = cleanup_client.Reply.of({"status": "ok", "queue_id": "4FzQ1X2Y3Z"})
    assert reply.ok and reply.queue_id == "4FzQ1X2Y3Z" and reply.text == ""
    refusal = cleanup_client.Reply.of({"status": "reject", "dsn": "5.3.4",
                                       "reason": "message file too big"})
    assert not refusal.ok and refusal.status == "reject"
    assert refusal.text == "5.3.4 message file too big"
    assert cleanup_client.Reply.of({"status": "defer", "reason": "try later"}).text == "try later"


def test_the_endpoint_follows_the_socket_the_master_bound(tmp_path, monkeypatch):
    (tmp_path / "main.cf").write_text("cleanup_service_name = mycleanup\n")
    cfg = load_config(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "public").mkdir()
    (tmp_path / "private").mkdir()
    assert cleanup_client.endpoint(cfg) == "public/mycleanup"      # nothing bound yet
    (tmp_path / "private" / "mycleanup").touch()
    assert cleanup_client.endpoint(cfg) == "private/mycleanup"
    (tmp_path / "public" / "mycleanup").touch()
    assert cleanup_client.endpoint(cfg) == "public/mycleanup"


def test_service_endpoint_looks_under_the_queue_directory(tmp_path):
    (tmp_path / "private").mkdir()
    (tmp_path / "private" / "anvil").touch()
    assert ipc.service_endpoint("anvil", str(tmp_path)) == f"{tmp_path}/private/anvil"
    assert ipc.service_endpoint("qmgr", str(tmp_path)) == f"{tmp_path}/public/qmgr"
