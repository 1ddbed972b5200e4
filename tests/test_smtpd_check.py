"""The smtpd restriction language: relay control, unknown users, access maps.

Every case uses a real configuration (main.cf in a temporary directory) and
real tables (inline:, texthash:); the client is given as name and address."""

import pytest

from pymaster.mail.config import load_config
from services.smtpd.check import Checker, ConfigurationError, Context

BASE = {
    "myhostname": "mx.example.com",
    "mydomain": "example.com",
    "mydestination": "$myhostname, localhost",
    "mynetworks": "127.0.0.0/8, [::1]/128",
    "relay_domains": "relay.example",
    "local_recipient_maps": "inline:{ alice=x, bob=x }",
    "alias_maps": "",
    "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
}


def checker(tmp_path, **settings) -> Checker:
    values = {**BASE, **settings}
    (tmp_path / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in values.items()))
    return Checker(load_config(str(tmp_path)))


def rcpt(c: Checker, recipient: str, addr: str = "192.0.2.1", name: str = "unknown",
         sender: str = "a@sender.example", helo: str = "client.example") -> str | None:
    return c.check_rcpt(Context(name, addr, helo, sender, recipient))


class TestRelayControl:
    def test_outsider_may_not_relay(self, tmp_path):
        assert rcpt(checker(tmp_path), "x@other.example") == \
            "554 5.7.1 <x@other.example>: Relay access denied"

    def test_mynetworks_may_relay(self, tmp_path):
        assert rcpt(checker(tmp_path), "x@other.example", addr="127.0.0.1") is None

    def test_outsider_may_send_to_local_and_relay_domains(self, tmp_path):
        c = checker(tmp_path)
        assert rcpt(c, "alice@mx.example.com") is None
        assert rcpt(c, "x@relay.example") is None

    def test_defer_unauth_destination_is_temporary(self, tmp_path):
        c = checker(tmp_path, smtpd_relay_restrictions="permit_mynetworks, defer_unauth_destination")
        assert rcpt(c, "x@other.example") == "454 4.7.1 <x@other.example>: Relay access denied"

    @pytest.mark.parametrize("routed", [
        '"user@other.example"@mx.example.com', "user%other.example@mx.example.com",
        "other.example!user@mx.example.com",
    ])
    def test_routing_operators_never_relay(self, tmp_path, routed):
        reply = rcpt(checker(tmp_path), routed)
        assert reply is not None and reply.startswith("554 5.7.1")

    def test_relay_rules_then_recipient_rules(self, tmp_path):
        c = checker(tmp_path, smtpd_relay_restrictions="permit_mynetworks, permit_auth_destination, reject",
                    smtpd_recipient_restrictions="check_recipient_access inline:{ bob@mx.example.com=REJECT }")
        assert rcpt(c, "alice@mx.example.com") is None
        assert rcpt(c, "bob@mx.example.com") == \
            "554 5.7.1 <bob@mx.example.com>: Recipient address rejected: Access denied"
        assert rcpt(c, "x@other.example") == \
            "554 5.7.1 <x@other.example>: Recipient address rejected: Access denied"


class TestUnknownRecipients:
    def test_unknown_local_user(self, tmp_path):
        assert rcpt(checker(tmp_path), "nobody@mx.example.com", addr="127.0.0.1") == \
            "550 5.1.1 <nobody@mx.example.com>: Recipient address rejected: " \
            "User unknown in local recipient table"

    def test_known_local_user_with_and_without_domain(self, tmp_path):
        c = checker(tmp_path)
        assert rcpt(c, "alice@mx.example.com") is None
        assert rcpt(c, "bob@localhost") is None

    def test_empty_local_recipient_maps_accepts_everyone(self, tmp_path):
        assert rcpt(checker(tmp_path, local_recipient_maps=""), "anyone@mx.example.com") is None

    def test_unlisted_check_can_be_turned_off(self, tmp_path):
        c = checker(tmp_path, smtpd_reject_unlisted_recipient="no")
        assert rcpt(c, "nobody@mx.example.com") is None

    def test_virtual_alias_domain_needs_an_entry(self, tmp_path):
        c = checker(tmp_path, virtual_alias_domains="virt.example",
                    virtual_alias_maps="inline:{ a@virt.example=alice }")
        assert rcpt(c, "a@virt.example") is None
        assert rcpt(c, "b@virt.example") == \
            "550 5.1.1 <b@virt.example>: Recipient address rejected: " \
            "User unknown in virtual alias table"

    def test_relay_recipient_maps(self, tmp_path):
        c = checker(tmp_path, relay_recipient_maps="inline:{ ok@relay.example=x }")
        assert rcpt(c, "ok@relay.example") is None
        assert "User unknown in relay recipient table" in rcpt(c, "no@relay.example")

    def test_table_failure_is_temporary(self, tmp_path):
        c = checker(tmp_path, local_recipient_maps="fail:broken")
        assert rcpt(c, "alice@mx.example.com") == \
            "451 4.3.0 <alice@mx.example.com>: Temporary lookup failure"


class TestAccessMaps:
    @pytest.mark.parametrize("action, reply", [
        ("OK", "554 5.7.1 <x@other.example>: Relay access denied"),   # ends the client list only
        ("DUNNO", "554 5.7.1 <x@other.example>: Relay access denied"),
        ("REJECT", "554 5.7.1 <unknown[192.0.2.1]>: Client host rejected: Access denied"),
        ("REJECT go away", "554 5.7.1 <unknown[192.0.2.1]>: Client host rejected: go away"),
        ("DEFER", "450 4.7.1 <unknown[192.0.2.1]>: Client host rejected: Access denied"),
        ("550 not here", "550 5.7.1 <unknown[192.0.2.1]>: Client host rejected: not here"),
        ("421 4.7.0 later", "421 4.7.0 <unknown[192.0.2.1]>: Client host rejected: later"),
    ])
    def test_client_access_actions(self, tmp_path, action, reply):
        c = checker(tmp_path, smtpd_client_restrictions=f"check_client_access inline:{{ {{192.0.2 = {action}}} }}")
        assert rcpt(c, "x@other.example") == reply

    def test_client_name_and_parents(self, tmp_path):
        c = checker(tmp_path, smtpd_client_restrictions="check_client_access inline:{ example.net=REJECT }")
        assert rcpt(c, "alice@mx.example.com", name="host.example.net").startswith(
            "554 5.7.1 <host.example.net[192.0.2.1]>: Client host rejected")

    def test_helo_access(self, tmp_path):
        c = checker(tmp_path, smtpd_helo_restrictions="check_helo_access inline:{ bad.example=REJECT }")
        assert rcpt(c, "alice@mx.example.com", helo="bad.example") == \
            "554 5.7.1 <bad.example>: Helo command rejected: Access denied"

    def test_sender_access_by_domain(self, tmp_path):
        c = checker(tmp_path, smtpd_sender_restrictions="check_sender_access inline:{ spam.example=REJECT }")
        assert rcpt(c, "alice@mx.example.com", sender="x@spam.example") == \
            "554 5.7.1 <x@spam.example>: Sender address rejected: Access denied"
        assert rcpt(c, "alice@mx.example.com", sender="x@ok.example") is None

    def test_null_sender_lookup_key(self, tmp_path):
        c = checker(tmp_path, smtpd_sender_restrictions="check_sender_access inline:{ <>=REJECT }")
        assert rcpt(c, "alice@mx.example.com", sender="").startswith("554 5.7.1 <>: Sender")

    def test_permit_in_client_list_does_not_skip_relay_control(self, tmp_path):
        c = checker(tmp_path, smtpd_client_restrictions="permit")
        assert rcpt(c, "x@other.example") == "554 5.7.1 <x@other.example>: Relay access denied"

    def test_action_may_be_a_restriction(self, tmp_path):
        c = checker(tmp_path, smtpd_recipient_restrictions=
                    "check_recipient_access inline:{ alice@mx.example.com=defer }")
        assert rcpt(c, "alice@mx.example.com").startswith("450 4.7.1 <alice@mx.example.com>")


class TestConfiguration:
    def test_unknown_restriction(self, tmp_path):
        with pytest.raises(ConfigurationError, match="unknown restriction"):
            checker(tmp_path, smtpd_recipient_restrictions="permit_everything")

    def test_missing_table(self, tmp_path):
        with pytest.raises(ConfigurationError, match="needs a table"):
            checker(tmp_path, smtpd_recipient_restrictions="check_recipient_access")

    def test_data_restrictions(self, tmp_path):
        c = checker(tmp_path, smtpd_data_restrictions="reject")
        assert c.check_data(Context("unknown", "192.0.2.1", "h", "a@b")) == \
            "554 5.7.1 <DATA>: Data command rejected: Access denied"
