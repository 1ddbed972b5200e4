"""A lookup table pymaster cannot open (sdbm:, dbm:, a missing file) is a
temporary failure, never a service that dies at start-up.

The real master runs with such a table in main.cf: smtpd keeps its port,
logs the table's warning and answers 451 at RCPT, as Debian's Postfix does
with the same settings (compared side by side where it is installed).
"""

from __future__ import annotations

import re

import pytest

from tests.support.instance import Instance
from tests.support.parity import postfix
from tests.support.parity.dialogue import play

ACCESS = {"smtpd_recipient_restrictions":
          "check_recipient_access sdbm:/etc/postfix/nosuch, permit_mynetworks, "
          "reject_unauth_destination"}
DIALOGUE = [b"EHLO client.example", b"MAIL FROM:<a@example.com>", b"RCPT TO:<x@localhost>",
            b"QUIT"]
ACCESS_REPLY = ["451 4.3.5 <x@localhost>: Recipient address rejected: Server configuration error"]
RESOLVE_REPLY = ["451 4.3.0 <x@localhost>: Temporary lookup failure"]
UNAVAILABLE = r"warning: {spec} is unavailable\. unsupported dictionary type: {type}"


def rcpt_reply(port: int) -> list[str]:
    return play(port, DIALOGUE)[3]


class TestUnavailableTable:
    def test_an_access_table_of_an_unsupported_type(self, tmp_path):
        with Instance(tmp_path, main_cf=ACCESS) as inst:
            assert rcpt_reply(inst.smtp_port) == ACCESS_REPLY
            inst.wait_for_log(r"postfix/smtpd\[\d+\]: " + UNAVAILABLE.format(
                spec="sdbm:/etc/postfix/nosuch", type="sdbm"))
            inst.wait_for_log(r'warning: sdbm:/etc/postfix/nosuch lookup error for '
                              r'"x@localhost"')
            # The port stays up: a second session gets the same answer.
            assert rcpt_reply(inst.smtp_port) == ACCESS_REPLY
            log = inst.log_text()
            assert "fatal" not in log and "Error:" not in log and "TableError" not in log

    def test_a_recipient_table_of_an_unsupported_type(self, tmp_path):
        with Instance(tmp_path, main_cf={"virtual_alias_maps": "dbm:/etc/postfix/l"}) as inst:
            assert rcpt_reply(inst.smtp_port) == RESOLVE_REPLY
            inst.wait_for_log(UNAVAILABLE.format(spec="dbm:/etc/postfix/l", type="dbm"))
            assert rcpt_reply(inst.smtp_port) == RESOLVE_REPLY
            assert "fatal" not in inst.log_text()

    def test_postfix_check_names_it(self, tmp_path):
        inst = Instance(tmp_path, main_cf=ACCESS, start=False)
        done = inst.postfix("check")
        assert (f"postfix/postfix-script: warning: {inst.config_dir}/main.cf: "
                "smtpd_recipient_restrictions: unsupported dictionary type: sdbm "
                "(sdbm:/etc/postfix/nosuch)") in done.stderr.decode()


@pytest.mark.skipif(bool(postfix.available()), reason=postfix.available() or "-")
class TestParity:
    @pytest.mark.parametrize("settings, reply", [(ACCESS, ACCESS_REPLY),
                                                 ({"transport_maps": "dbm:/etc/x"},
                                                  RESOLVE_REPLY)])
    def test_the_same_reply_and_warning_as_postfix(self, tmp_path, settings, reply):
        warning = re.compile(r"warning: (\S+ is unavailable\. .*)")
        found = []
        for kind, server in (("pymaster", Instance), ("postfix", postfix.DebianPostfix)):
            with server(tmp_path / kind, settings) as inst:
                assert rcpt_reply(inst.smtp_port) == reply, kind
                found.append(inst.wait_for_log(warning.pattern).group(1))
        assert found[0] == found[1]
