"""proxymap(8) in the shipped master.cf, as any user: smtpd's default
local_recipient_maps (proxy:unix:passwd.byname $alias_maps) answered by the
service; a table that proxy_read_maps no longer approves is a temporary
failure (451) with proxymap's warning, never a crash."""

from __future__ import annotations

import os
import pwd
import smtplib

from tests.support.instance import Instance
from tests.support.wait import wait_until

DOMAIN = "mx.example.com"


def rcpt(inst: Instance, address: str) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=30) as s:
        s.ehlo("client.example")
        s.mail("sender@client.example")
        return s.rcpt(address)


def test_local_recipients_through_proxymap_and_unapproved_table(tmp_path):
    user = pwd.getpwuid(os.getuid()).pw_name
    with Instance(tmp_path, main_cf={"myhostname": DOMAIN,
                                     "mydestination": "$myhostname"}) as inst:
        assert rcpt(inst, f"{user}@{DOMAIN}")[0] == 250
        code, text = rcpt(inst, f"no-such-user-pm@{DOMAIN}")
        assert (code, b"User unknown in local recipient table" in text) == (550, True)

        inst.set_main_cf({"proxy_read_maps": "$alias_maps"})
        assert inst.postfix("reload").returncode == 0
        def refused() -> tuple[int, bytes] | None:
            # smtpd processes of the old generation may still answer first.
            reply = rcpt(inst, f"{user}@{DOMAIN}")
            return reply if reply[0] != 250 else None
        code, text = wait_until(refused, what="a refusal after the reload", interval=0.2)
        assert code == 451, text
        assert text.startswith(b"4.3.0"), text
        inst.wait_for_log(r'postfix/proxymap\[\d+\]: warning: request for unapproved table: '
                          r'"unix:passwd\.byname"')
        assert " fatal: " not in inst.log_text() and " panic: " not in inst.log_text()
