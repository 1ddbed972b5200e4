"""The smtpd restriction language beyond relay control: classes, modifiers, host names,
access(5) actions, DNS lists, policy delegation and the reply shapes.

Every case uses a real configuration and real tables (inline:); DNS answers
come from the loopback test server (tests/support/dnsserver.py); the policy server
is a small thread speaking the Postfix policy protocol."""

import socket
import threading

import pytest

from pymaster.util import log
from pymaster.mail.config import load_config
from services.smtpd.check import Checker, ConfigurationError, Context
from services.smtpd.rbl import parse_filter
from services.smtpd.replies import with_footer
from services.smtpd.xclient import AttributeError_, parse_attributes
from tests.support.dnsserver import DnsServer

BASE = {
    "myhostname": "mx.example.com",
    "mydomain": "example.com",
    "mydestination": "$myhostname, localhost",
    "mynetworks": "127.0.0.0/8",
    "local_recipient_maps": "inline:{ alice=x, bob=x }",
    "alias_maps": "",
    "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
}


def checker(tmp_path, **settings) -> Checker:
    values = {**BASE, "maillog_file": str(tmp_path / "maillog"), **settings}
    (tmp_path / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in values.items()))
    cfg = load_config(str(tmp_path))
    log.setup("smtpd", cfg)
    return Checker(cfg)


def logged(tmp_path) -> str:
    path = tmp_path / "maillog"
    return path.read_text() if path.exists() else ""


def ctx(recipient="alice@mx.example.com", addr="192.0.2.1", name="unknown",
        sender="a@sender.example", helo="client.example", **extra) -> Context:
    return Context(name, addr, helo, sender, recipient, **extra)


def rcpt(c: Checker, recipient: str = "alice@mx.example.com", **kw) -> str | None:
    return c.check_rcpt(ctx(recipient, **kw))


class TestRestrictionClasses:
    def test_class_named_by_an_access_map(self, tmp_path):
        c = checker(tmp_path, smtpd_restriction_classes="spamlover, spamhater",
                    spamlover="permit", spamhater="reject",
                    smtpd_recipient_restrictions="check_recipient_access "
                    "inline:{ alice@mx.example.com=spamlover, bob@mx.example.com=spamhater }")
        assert rcpt(c, "alice@mx.example.com") is None
        assert rcpt(c, "bob@mx.example.com") == \
            "554 5.7.1 <bob@mx.example.com>: Recipient address rejected: Access denied"

    def test_class_used_directly_in_a_list(self, tmp_path):
        c = checker(tmp_path, smtpd_restriction_classes="strict", strict="reject",
                    smtpd_client_restrictions="strict")
        assert rcpt(c).startswith("554 5.7.1 <unknown[192.0.2.1]>: Client host rejected")

    def test_unknown_word_in_a_class_is_a_configuration_error(self, tmp_path):
        with pytest.raises(ConfigurationError, match="unknown restriction"):
            checker(tmp_path, smtpd_restriction_classes="strict", strict="reject_everyone")


class TestModifiers:
    def test_warn_if_reject_logs_instead_of_refusing(self, tmp_path):
        c = checker(tmp_path, smtpd_recipient_restrictions="warn_if_reject reject, permit")
        assert rcpt(c) is None
        assert "NOQUEUE: reject_warning: RCPT from unknown[192.0.2.1]: 554 5.7.1 " \
               "<alice@mx.example.com>: Recipient address rejected: Access denied; " \
               "from=<a@sender.example> to=<alice@mx.example.com> proto=ESMTP " \
               "helo=<client.example>" in logged(tmp_path)

    def test_warn_if_reject_covers_the_next_restriction_only(self, tmp_path):
        c = checker(tmp_path, smtpd_recipient_restrictions="warn_if_reject permit_mynetworks, reject")
        assert rcpt(c).startswith("554 5.7.1")

    def test_defer_if_permit_turns_a_later_permit_into_a_deferral(self, tmp_path):
        c = checker(tmp_path, smtpd_recipient_restrictions="defer_if_permit, permit")
        assert rcpt(c) == "450 4.7.1 <alice@mx.example.com>: Recipient address rejected: " \
                          "Access denied"

    def test_defer_if_permit_loses_to_a_later_reject(self, tmp_path):
        c = checker(tmp_path, smtpd_recipient_restrictions="defer_if_permit, reject")
        assert rcpt(c).startswith("554 5.7.1")

    def test_defer_if_reject_softens_a_later_reject(self, tmp_path):
        c = checker(tmp_path, smtpd_recipient_restrictions="defer_if_reject, reject")
        assert rcpt(c) == "450 4.7.1 <alice@mx.example.com>: Recipient address rejected: " \
                          "Access denied"

    def test_soft_bounce_makes_every_refusal_temporary(self, tmp_path):
        c = checker(tmp_path, soft_bounce="yes")
        assert rcpt(c, "x@other.example") == "454 4.7.1 <x@other.example>: Relay access denied"

    def test_reply_codes_are_configurable(self, tmp_path):
        c = checker(tmp_path, reject_code="550", relay_domains_reject_code="550",
                    smtpd_client_restrictions="check_client_access inline:{ 192.0.2.9=REJECT }",
                    access_map_reject_code="551")
        assert rcpt(c, "x@other.example").startswith("550 5.7.1 <x@other.example>: Relay")
        assert rcpt(c, addr="192.0.2.9").startswith("551 5.7.1 <unknown[192.0.2.9]>")


class TestHostNames:
    @pytest.mark.parametrize("helo, reply", [
        ("bad..name", "501 5.5.2 <bad..name>: Helo command rejected: Invalid name"),
        ("[192.0.2.1]", None),
        ("host", "504 5.5.2 <host>: Helo command rejected: need fully-qualified hostname"),
        ("client.example", None),
    ])
    def test_helo_syntax(self, tmp_path, helo, reply):
        c = checker(tmp_path, smtpd_helo_restrictions="reject_invalid_hostname, "
                    "reject_non_fqdn_hostname")
        assert rcpt(c, helo=helo) == reply

    def test_non_fqdn_sender_and_recipient(self, tmp_path):
        c = checker(tmp_path, smtpd_recipient_restrictions="reject_non_fqdn_sender, "
                    "reject_non_fqdn_recipient")
        assert rcpt(c, sender="user") == \
            "504 5.5.2 <user>: Sender address rejected: need fully-qualified address"
        assert rcpt(c, "bob@localhost") == \
            "504 5.5.2 <bob@localhost>: Recipient address rejected: need fully-qualified address"
        assert rcpt(c, sender="") is None

    def test_unknown_client_hostname(self, tmp_path):
        c = checker(tmp_path, smtpd_client_restrictions="reject_unknown_client_hostname")
        assert rcpt(c) == "450 4.7.25 Client host rejected: cannot find your hostname, " \
                          "[192.0.2.1]"
        assert rcpt(c, name="mail.example.net") is None

    def test_unknown_domains_come_from_dns(self, tmp_path):
        zone = {"sender.example": {"MX": ["10 mx.sender.example."]},
                "broken.example": "SERVFAIL"}
        with DnsServer(zone) as server:
            c = checker(tmp_path, dns_nameservers=server.nameserver,
                        smtpd_sender_restrictions="reject_unknown_sender_domain",
                        smtpd_recipient_restrictions="permit_mynetworks, "
                        "reject_unknown_recipient_domain, permit")
            assert rcpt(c) is None
            assert rcpt(c, sender="x@nowhere.example") == \
                "450 4.1.8 <x@nowhere.example>: Sender address rejected: Domain not found"
            assert rcpt(c, "x@nowhere.example", addr="127.0.0.1") is None   # permitted first
            c2 = checker(tmp_path, dns_nameservers=server.nameserver,
                         smtpd_recipient_restrictions="reject_unknown_recipient_domain, permit",
                         smtpd_relay_restrictions="permit")
            assert rcpt(c2, "x@nowhere.example") == \
                "450 4.1.2 <x@nowhere.example>: Recipient address rejected: Domain not found"
            # A DNS failure defers only what would otherwise pass.
            assert rcpt(c2, "x@broken.example").startswith("450 4.1.2 <x@broken.example>")


class TestAccessActions:
    def _c(self, tmp_path, value: str) -> Checker:
        return checker(tmp_path, smtpd_recipient_restrictions=
                       f"check_recipient_access inline:{{ {{alice@mx.example.com = {value}}} }}")

    def test_hold_is_logged_and_handed_to_cleanup(self, tmp_path):
        c = self._c(tmp_path, "HOLD")
        context = ctx()
        assert c.check_rcpt(context) is None
        assert context.actions == [{"action": "HOLD", "text": ""}]
        assert "NOQUEUE: hold: RCPT from unknown[192.0.2.1]: <alice@mx.example.com>: " \
               "Recipient address triggers HOLD action; from=<a@sender.example> " \
               "to=<alice@mx.example.com> proto=ESMTP helo=<client.example>" in logged(tmp_path)

    @pytest.mark.parametrize("value, action, text", [
        ("DISCARD", "DISCARD", ""),
        ("FILTER smtp:[127.0.0.1]:10025", "FILTER", "smtp:[127.0.0.1]:10025"),
        ("REDIRECT other@example.net", "REDIRECT", "other@example.net"),
        ("BCC archive@example.net", "BCC", "archive@example.net"),
        ("PREPEND X-Checked: yes", "PREPEND", "X-Checked: yes"),
    ])
    def test_cleanup_actions(self, tmp_path, value, action, text):
        context = ctx()
        assert self._c(tmp_path, value).check_rcpt(context) is None
        assert context.actions == [{"action": action, "text": text}]

    def test_warn_and_info_only_log(self, tmp_path):
        assert rcpt(self._c(tmp_path, "WARN looks odd")) is None
        assert "NOQUEUE: warn: RCPT from unknown[192.0.2.1]: <alice@mx.example.com>: " \
               "Recipient address looks odd;" in logged(tmp_path)

    def test_defer_if_permit_and_reject_results(self, tmp_path):
        assert rcpt(self._c(tmp_path, "DEFER_IF_PERMIT try later")) == \
            "450 4.7.1 <alice@mx.example.com>: Recipient address rejected: try later"

    def test_restriction_list_as_a_result(self, tmp_path):
        assert rcpt(self._c(tmp_path, "permit_mynetworks reject")).startswith("554 5.7.1")
        assert rcpt(self._c(tmp_path, "permit_mynetworks reject"), addr="127.0.0.1") is None

    def test_enhanced_status_code_in_the_answer(self, tmp_path):
        assert rcpt(self._c(tmp_path, "550 5.1.1 gone")) == \
            "550 5.1.1 <alice@mx.example.com>: Recipient address rejected: gone"


class TestOtherRestrictions:
    def test_multi_recipient_bounce(self, tmp_path):
        c = checker(tmp_path, smtpd_recipient_restrictions="reject_multi_recipient_bounce",
                    smtpd_data_restrictions="reject_multi_recipient_bounce")
        assert c.check_rcpt(ctx(sender="", recipient_count=0)) is None
        assert c.check_rcpt(ctx(sender="", recipient_count=1)) == \
            "550 5.5.3 <alice@mx.example.com>: Recipient address rejected: Multi-recipient bounce"
        assert c.check_data(ctx(sender="", recipient_count=2)) == \
            "550 5.5.3 <DATA>: Data command rejected: Multi-recipient bounce"

    def test_unauth_pipelining(self, tmp_path):
        c = checker(tmp_path, smtpd_data_restrictions="reject_unauth_pipelining")
        assert c.check_data(ctx()) is None
        assert c.check_data(ctx(pipelining_violation=True)) == \
            "503 5.5.0 <DATA>: Data command rejected: Improper use of SMTP command pipelining"

    def test_unverified_without_verify_service_defers_if_permitted(self, tmp_path, monkeypatch):
        # No private/verify here: unverified_recipient_tempfail_action (tests/test_verify.py
        # has the answers of a running service).
        monkeypatch.chdir(tmp_path)
        c = checker(tmp_path, smtpd_recipient_restrictions="reject_unverified_recipient")
        assert rcpt(c) == "450 4.1.1 <alice@mx.example.com>: Recipient address rejected: " \
            "address verification problem"

    def test_etrn_and_end_of_data_lists(self, tmp_path):
        c = checker(tmp_path, smtpd_etrn_restrictions="reject",
                    smtpd_end_of_data_restrictions="reject")
        assert c.check_etrn(ctx(etrn_domain="example.net")) == \
            "554 5.7.1 <example.net>: Etrn command rejected: Access denied"
        assert c.check_end_of_data(ctx()) == \
            "554 5.7.1 <END-OF-MESSAGE>: End-of-data rejected: Access denied"


class TestDnsLists:
    ZONE = {"1.2.0.192.zen.example": {"A": ["127.0.0.2"], "TXT": ["listed"]},
            "3.2.0.192.zen.example": {"A": ["127.0.0.20"]},
            "spam.example.dbl.example": {"A": ["127.0.1.2"]}}

    def test_filter_syntax(self):
        matches = parse_filter("127.0.0.[2..11]")
        assert matches("127.0.0.2") and matches("127.0.0.11")
        assert not matches("127.0.0.12")
        assert parse_filter("127.0.[0;1].2")("127.0.1.2")

    def test_listed_client_is_refused_with_the_txt_reason(self, tmp_path):
        with DnsServer(self.ZONE) as server:
            c = checker(tmp_path, dns_nameservers=server.nameserver,
                        smtpd_client_restrictions="reject_rbl_client zen.example=127.0.0.[2..11]")
            assert rcpt(c) == "554 5.7.1 Service unavailable; Client host [192.0.2.1] " \
                              "blocked using zen.example; listed"
            assert rcpt(c, addr="192.0.2.3") is None        # answer outside the filter
            assert rcpt(c, addr="192.0.2.4") is None        # not listed

    def test_rbl_reply_maps(self, tmp_path):
        with DnsServer(self.ZONE) as server:
            c = checker(tmp_path, dns_nameservers=server.nameserver,
                        rbl_reply_maps="inline:{ {zen.example=450 4.7.1 $$rbl_what is listed} }",
                        smtpd_client_restrictions="reject_rbl_client zen.example")
            assert rcpt(c) == "450 4.7.1 192.0.2.1 is listed"

    def test_rhsbl_sender_and_dnswl(self, tmp_path):
        with DnsServer(self.ZONE) as server:
            c = checker(tmp_path, dns_nameservers=server.nameserver,
                        smtpd_sender_restrictions="permit_dnswl_client zen.example=127.0.0.20, "
                        "reject_rhsbl_sender dbl.example")
            assert rcpt(c, sender="x@spam.example") == \
                "554 5.7.1 Service unavailable; Sender address [spam.example] blocked using " \
                "dbl.example"
            assert rcpt(c, sender="x@spam.example", addr="192.0.2.3") is None


class PolicyServer:
    """Answers every request with ACTION and remembers the requests."""

    def __init__(self, action: str) -> None:
        self.action = action
        self.requests: list[dict] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(5)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            conn, _ = self.sock.accept()
            f = conn.makefile("rb")
            while True:
                attrs = {}
                for line in f:
                    line = line.decode().rstrip("\n")
                    if not line:
                        break
                    k, _, v = line.partition("=")
                    attrs[k] = v
                if not attrs:
                    break
                self.requests.append(attrs)
                conn.sendall(f"action={self.action}\n\n".encode())
            conn.close()


class TestPolicyService:
    def test_request_and_action(self, tmp_path):
        server = PolicyServer("DEFER_IF_PERMIT Greylisted")
        c = checker(tmp_path, smtpd_recipient_restrictions=
                    f"check_policy_service inet:127.0.0.1:{server.port}")
        assert rcpt(c, verb="RCPT") == \
            "450 4.7.1 <alice@mx.example.com>: Recipient address rejected: Greylisted"
        request = server.requests[0]
        assert request["request"] == "smtpd_access_policy"
        assert request["protocol_state"] == "RCPT"
        assert request["client_address"] == "192.0.2.1"
        assert request["sender"] == "a@sender.example"
        assert request["recipient"] == "alice@mx.example.com"
        # The connection is kept for the next request.
        server.action = "DUNNO"
        assert rcpt(c) is None
        assert len(server.requests) == 2

    def test_unreachable_server_gives_the_default_action(self, tmp_path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        c = checker(tmp_path, smtpd_policy_service_retry_delay="0",
                    smtpd_recipient_restrictions=f"check_policy_service inet:127.0.0.1:{port}")
        assert rcpt(c) == "451 4.3.5 <alice@mx.example.com>: Recipient address rejected: " \
                          "Server configuration problem"


class TestXclientAttributes:
    def test_parse(self):
        assert parse_attributes("NAME=x.example ADDR=IPv6:2001:db8::1 LOGIN=[UNAVAILABLE]",
                                ["NAME", "ADDR", "LOGIN"], "XCLIENT") == \
            {"NAME": "x.example", "ADDR": "2001:db8::1", "LOGIN": None}

    def test_bad_attribute(self):
        with pytest.raises(AttributeError_, match="Bad XCLIENT attribute name: FOO"):
            parse_attributes("FOO=1", ["NAME"], "XCLIENT")


def test_reject_footer():
    assert with_footer("554 5.7.1 <x@y>: Relay access denied", "see $client_address",
                       "unknown", "192.0.2.1") == \
        "554-5.7.1 <x@y>: Relay access denied\r\n554 5.7.1 see 192.0.2.1"


class TestWhatAChecksNeeds:
    """What a configuration's checks may wait on decides where they run: inline
    when only tables and lists are read, in a thread when DNS or a policy
    server may be asked; dnspython is loaded only when DNS may be asked."""

    def test_tables_and_lists_only_run_inline_without_dns(self, tmp_path):
        c = checker(tmp_path, smtpd_recipient_restrictions="permit_mynetworks, reject")
        assert not c.blocks
        assert not c.uses_dns

    @pytest.mark.parametrize("restriction", [
        "reject_rbl_client zen.example", "reject_rhsbl_sender dbl.example",
        "reject_unknown_sender_domain", "reject_unknown_helo_hostname",
        "check_sender_mx_access inline:{ mx.example=reject }"])
    def test_a_dns_restriction_blocks_and_needs_dns(self, tmp_path, restriction):
        c = checker(tmp_path, smtpd_recipient_restrictions=f"{restriction}, permit")
        assert c.blocks
        assert c.uses_dns

    def test_a_dns_restriction_in_a_class_counts(self, tmp_path):
        c = checker(tmp_path, smtpd_restriction_classes="strict",
                    strict="reject_rbl_client zen.example",
                    smtpd_recipient_restrictions="strict, permit")
        assert c.blocks

    def test_a_policy_server_blocks_but_needs_no_dns(self, tmp_path):
        c = checker(tmp_path,
                    smtpd_recipient_restrictions="check_policy_service inet:127.0.0.1:9, permit")
        assert c.blocks
        assert not c.uses_dns

    @pytest.mark.parametrize("table", [
        "socketmap:inet:127.0.0.1:9:access", "proxy:hash:/nonexistent/access",
        "unionmap:{inline:{ a=OK }, socketmap:unix:/nonexistent:access}"])
    def test_a_table_that_waits_on_another_process_blocks(self, tmp_path, table):
        c = checker(tmp_path, smtpd_recipient_restrictions=f"check_sender_access {table}, permit")
        c.open_tables()
        assert c.blocks

    def test_a_local_table_does_not_block(self, tmp_path):
        c = checker(tmp_path, smtpd_recipient_restrictions="check_sender_access "
                    "inline:{ a@sender.example=OK }, permit")
        c.open_tables()
        assert not c.blocks

    def test_a_remote_recipient_table_blocks_only_rcpt_for_its_class(self, tmp_path):
        # Postfix's default local_recipient_maps is proxy:unix:passwd.byname: only a
        # recipient of the local class reads it, so other stages and recipients
        # of other classes run inline.
        c = checker(tmp_path, mydestination="local.example",
                    local_recipient_maps="proxy:unix:passwd.byname",
                    smtpd_recipient_restrictions="permit_mynetworks, reject")
        c.open_tables()
        assert c.blocks
        assert c.blocks_at("check_rcpt", ctx(recipient="u@local.example"))
        assert not c.blocks_at("check_rcpt", ctx(recipient="u@elsewhere.example"))
        for stage in ("check_client", "check_helo", "check_sender", "check_data",
                      "check_end_of_data"):
            assert not c.blocks_at(stage, ctx())

    def test_a_routed_recipient_counts_as_remote(self, tmp_path):
        c = checker(tmp_path, mydestination="local.example",
                    local_recipient_maps="proxy:unix:passwd.byname")
        c.open_tables()
        assert c.blocks_at("check_rcpt", ctx(recipient="u%local.example@elsewhere.example"))

    def test_a_remote_table_blocks_the_stage_that_names_it(self, tmp_path):
        c = checker(tmp_path, smtpd_data_restrictions="check_client_access "
                    "proxy:hash:/nonexistent/access, permit",
                    local_recipient_maps="")
        c.open_tables()
        assert c.blocks_at("check_data", ctx())
        assert not c.blocks_at("check_end_of_data", ctx())
        assert not c.blocks_at("check_rcpt", ctx())

    def test_a_restriction_reading_a_remote_parameter_table_blocks(self, tmp_path):
        c = checker(tmp_path, local_recipient_maps="",
                    smtpd_sender_login_maps="proxy:hash:/nonexistent/logins",
                    smtpd_sender_restrictions="reject_sender_login_mismatch")
        c.open_tables()
        assert c.blocks_at("check_sender", ctx())
        assert not c.blocks_at("check_data", ctx())

    def test_an_access_table_loads_dns_because_its_answer_may_name_a_dns_check(self, tmp_path):
        c = checker(tmp_path, smtpd_recipient_restrictions="check_sender_access "
                    "inline:{ a@sender.example=reject_unknown_sender_domain }, permit")
        assert c.uses_dns
        assert not c.blocks


class TestStagesWithNothingToRun:
    def test_empty_data_lists_run_nothing(self, tmp_path):
        c = checker(tmp_path)
        assert c.runs_nothing("check_data") and c.runs_nothing("check_end_of_data")

    def test_a_data_list_runs(self, tmp_path):
        c = checker(tmp_path, smtpd_end_of_data_restrictions="reject")
        assert c.runs_nothing("check_data") and not c.runs_nothing("check_end_of_data")

    def test_rcpt_always_runs_the_unlisted_checks(self, tmp_path):
        c = checker(tmp_path, smtpd_relay_restrictions="", smtpd_recipient_restrictions="")
        assert not c.runs_nothing("check_rcpt")


class TestParameterLists:
    def test_a_match_list_file_is_read_each_time(self, tmp_path):
        """param_list keeps a list only when no file can change it."""
        clients = tmp_path / "clients"
        clients.write_text("192.0.2.1\n")
        c = checker(tmp_path, local_header_rewrite_clients=f"permit_mynetworks, {clients}")
        assert c.param_list("local_header_rewrite_clients") == ["permit_mynetworks", "192.0.2.1"]
        clients.write_text("192.0.2.2\n")
        assert c.param_list("local_header_rewrite_clients") == ["permit_mynetworks", "192.0.2.2"]

    def test_a_table_list_is_the_configured_one(self, tmp_path):
        c = checker(tmp_path, virtual_alias_maps="inline:{a=b}, inline:{c=d}")
        for _ in range(2):
            assert c.param_list("virtual_alias_maps") == ["inline:{a=b}", "inline:{c=d}"]
