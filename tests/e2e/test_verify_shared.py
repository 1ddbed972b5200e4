"""Two pymaster instances share one address verification cache in memcached.

Both instances are configured alike (one cluster): the virtual domain
`localhost` knows only joe, smtpd learns about a recipient from a probe
(reject_unverified_recipient), and address_verify_map is a memcache: table
on one real memcached. What one instance's probe found, the other answers
from the cache without a probe of its own. memcached going down turns the
verify answer into a temporary failure (4xx), never a 5xx or a crash.
"""

from __future__ import annotations

import pytest

from tests.e2e.test_address_verification import rcpt
from tests.support.instance import ROOT, Instance, _open_path_for_others
from tests.support.memcached import Memcached, available
from tests.support.parity import postfix as parity

pytestmark = [
    pytest.mark.skipif(bool(available()), reason=available() or "ok"),
    pytest.mark.skipif(not (ROOT / "libexec" / "verify").exists(),
                       reason="needs the verify service"),
]



def settings(verify_map: str) -> dict[str, str]:
    """settings - main.cf of a host whose smtpd learns about recipients by
    probes; the virtual domain localhost knows joe only."""
    return {
        "myhostname": "mx.example.com",
        "virtual_mailbox_maps": "inline:{ joe@localhost=localhost/joe/ }",
        "smtpd_recipient_restrictions": "reject_unverified_recipient",
        "smtpd_reject_unlisted_recipient": "no",
        "address_verify_map": verify_map,
        # memcache_table(5): without a backup table no host cleans up;
        # memcached's ttl expires the entries.
        "address_verify_cache_cleanup_interval": "0",
        "address_verify_poll_delay": "1s",
        "address_verify_poll_count": "20",
    }


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    shared = tmp_path_factory.mktemp("shared")
    with Memcached() as mc:
        cf = shared / "verify.cf"
        cf.write_text(f"memcache = {mc.server}\nkey_format = verify:%s\nmax_try = 1\n")
        cf.chmod(0o644)
        _open_path_for_others(shared)
        main_cf = settings(f"memcache:{cf}")
        with Instance(tmp_path_factory.mktemp("a"), main_cf=main_cf) as a, \
                Instance(tmp_path_factory.mktemp("b"), main_cf=main_cf) as b:
            yield mc, a, b


def test_one_probe_answers_both_instances(cluster):
    mc, a, b = cluster
    assert rcpt(a.smtp_port, "joe@localhost") == (250, "2.1.5 Ok")
    a.wait_for_log(r"status=deliverable")
    # Postfix's verify(8) entry: status 0 (OK), no probe out, the time, the text.
    assert mc.get("verify:joe@localhost").split(b"\r\n")[1].startswith(b"0:0:")
    assert rcpt(b.smtp_port, "joe@localhost") == (250, "2.1.5 Ok")
    b.wait_for_log(r"smtpd\[\d+\]: disconnect from")
    assert "double-bounce" not in b.log_text()


def test_a_refusal_found_by_one_is_given_by_the_other(cluster):
    mc, a, b = cluster
    code, text = rcpt(b.smtp_port, "nobody@localhost")
    assert code == 450 and "unverified address" in text, text
    assert rcpt(a.smtp_port, "nobody@localhost") == (code, text)
    a_probes = a.log_text().count("to=<nobody@localhost>, relay=virtual")
    assert a_probes == 0


def test_cache_down_is_a_temporary_failure(cluster):
    mc, a, b = cluster
    mc.stop()
    try:
        code, text = rcpt(a.smtp_port, "someone@localhost")
        assert 400 <= code < 500, (code, text)
        a.wait_for_log(r"verify\[\d+\]: warning: table memcache:\S+: query error: ")
    finally:
        mc.start()
    # Back: answers come again (the cache is empty after the restart).
    assert rcpt(b.smtp_port, "joe@localhost") == (250, "2.1.5 Ok")


def test_verify_cache_in_lmdb_through_proxywrite(tmp_path):
    """address_verify_map = proxy:lmdb:…: proxywrite creates and writes the
    file (Postfix's format), which Debian's postmap could read as well."""
    pytest.importorskip("lmdb")
    data = tmp_path / "data"
    main_cf = dict(settings(f"proxy:lmdb:{data}/verify_cache"), data_directory=str(data))
    with Instance(tmp_path / "inst", main_cf=main_cf) as inst:
        assert rcpt(inst.smtp_port, "joe@localhost") == (250, "2.1.5 Ok")
        done = inst.command("postmap", "-c", str(inst.config_dir), "-q", "joe@localhost",
                            f"lmdb:{data}/verify_cache")
        assert done.returncode == 0 and done.stdout.startswith(b"0:0:"), done


@pytest.mark.skipif(bool(parity.available()), reason=parity.available() or "ok")
def test_postfix_and_pymaster_share_the_cache(tmp_path):
    """Debian's Postfix and pymaster on one memcache: verify cache: each answers
    from the other's verdicts without probing, so the entry format is Postfix's."""
    with Memcached() as mc:
        cf = tmp_path / "verify.cf"
        cf.write_text(f"memcache = {mc.server}\nkey_format = verify:%s\n")
        cf.chmod(0o644)
        main_cf = dict(settings(f"memcache:{cf}"), virtual_mailbox_domains="localhost")
        with Instance(tmp_path / "ours", main_cf=main_cf) as ours, \
                parity.DebianPostfix(tmp_path / "theirs", dict(
                    main_cf, virtual_mailbox_base=str(tmp_path / "theirs" / "mail"),
                    virtual_uid_maps="static:65534", virtual_gid_maps="static:65534",
                    mydestination="")) as theirs:
            _open_path_for_others(tmp_path)
            # pymaster probes joe; Postfix answers from the cache.
            assert rcpt(ours.smtp_port, "joe@localhost") == (250, "2.1.5 Ok")
            assert rcpt(theirs.smtp_port, "joe@localhost") == (250, "2.1.5 Ok")
            # Postfix probes nobody; pymaster gives Postfix's verdict from the cache.
            theirs_reply = rcpt(theirs.smtp_port, "nobody@localhost")
            assert theirs_reply[0] == 450 and "unknown user" in theirs_reply[1], theirs_reply
            assert rcpt(ours.smtp_port, "nobody@localhost") == theirs_reply
            # Neither probed what the other had verified.
            assert "to=<joe@localhost>, relay=virtual" not in theirs.log_text()
            assert "to=<nobody@localhost>, relay=virtual" not in ours.log_text()
            assert "to=<nobody@localhost>, relay=virtual" in theirs.log_text()
