"""Debian's master.cf and main.cf as shipped, with chroot `y` for smtpd, cleanup, smtp ….

Only the listener (`smtp inet` -> `127.0.0.1:PORT inet`), the directories and the
usual additions of an installation (myhostname, mydestination, mynetworks,
home_mailbox, a relayhost, a virtual mailbox domain) change. The chrooted
smtpd cannot read /etc/passwd: its local_recipient_maps (the default,
`proxy:unix:passwd.byname $alias_maps`) is answered by the proxymap service
outside the jail. As root only (chroot, privilege drop, a system user).
"""

from __future__ import annotations

import os
import re
import shutil
import smtplib
import socket
from pathlib import Path

import pytest

from tests.support.accounts import account_under, can_add_accounts
from tests.support.dnsserver import DnsServer
from tests.support.instance import Instance, free_port
from tests.support.sink import smtp_sink

DEBIAN = Path(__file__).resolve().parents[1] / "data" / "debian"
DOMAIN = "mx.example.com"
VIRTUAL = "virtual.example"
NOBODY = 65534

pytestmark = pytest.mark.skipif(
    not can_add_accounts(),
    reason="Debian's master.cf chroots and drops privileges, and the test adds a "
           "system user: needs root and useradd")


@pytest.fixture
def sink():
    """Postfix's smtp-sink on 127.0.0.2, accepting everything: the relay's next hop."""
    with smtp_sink("127.0.0.2") as port:
        yield port


@pytest.fixture
def account(tmp_path):
    with account_under(tmp_path, "pd") as user:
        yield user


def with_postscreen(master_cf: str) -> str:
    """with_postscreen - master.cf as Debian's comments say to turn postscreen
    on: the four postscreen lines uncommented, the smtpd listener commented out."""
    master_cf = re.sub(r"(?m)^#((?:smtp|smtpd|dnsblog|tlsproxy)\s+(?:inet|pass|unix)\s.*"
                       r"(?:postscreen|smtpd|dnsblog|tlsproxy))$", r"\1", master_cf)
    return re.sub(r"(?m)^(smtp\s+inet\s.*\ssmtpd)$", r"#\1", master_cf)


def debian_instance(tmp_path: Path, sink_port: int, postscreen: bool = False,
                    extra: dict[str, str] | None = None) -> Instance:
    """debian_instance - Debian's two files, the listener and directories moved."""
    port = free_port()
    master_cf = (DEBIAN / "master.cf").read_text()
    if postscreen:
        master_cf = with_postscreen(master_cf)
    master_cf = re.sub(r"(?m)^smtp(\s+inet\s)", f"127.0.0.1:{port}\\1", master_cf)
    assert f"127.0.0.1:{port}" in master_cf
    etc = tmp_path / "etc"
    etc.mkdir(parents=True)
    (etc / "main.cf").write_text((DEBIAN / "main.cf").read_text())
    data = tmp_path / "data"
    data.mkdir()
    shutil.chown(data, "postfix", "postfix")
    queue = tmp_path / "spool"
    settings = {
        # directories
        "data_directory": str(data),
        "alias_maps": "hash:$config_directory/aliases",
        "alias_database": "hash:$config_directory/aliases",
        # what an administrator adds
        "myhostname": DOMAIN,
        "mydestination": "$myhostname, localhost",
        "mynetworks": "127.0.0.0/8",
        "home_mailbox": "Maildir/",
        "relayhost": f"[127.0.0.2]:{sink_port}",
        "virtual_mailbox_domains": VIRTUAL,
        "virtual_mailbox_base": str(queue / "mailboxes"),
        "virtual_mailbox_maps": "texthash:$config_directory/vmailbox",
        "virtual_uid_maps": f"static:{NOBODY}",
        "virtual_gid_maps": f"static:{NOBODY}",
    }
    settings.update(extra or {})
    inst = Instance(tmp_path, main_cf=settings, master_cf=master_cf, start=False)
    inst.smtp_port = port
    (inst.config_dir / "vmailbox").write_text(f"v@{VIRTUAL}  {VIRTUAL}/v/\n")
    return inst


def rcpt(inst: Instance, address: str) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=30) as s:
        s.ehlo("client.example")
        s.mail("sender@client.example")
        return s.rcpt(address)


def send(inst: Instance, address: str, token: str) -> None:
    body = f"Subject: {token}\n\n{token}\n".encode()
    with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=30) as s:
        s.sendmail("sender@client.example", [address], body)


def test_local_relayed_and_virtual_mail_with_debians_files(tmp_path, sink, account):
    inst = debian_instance(tmp_path, sink)
    user = account.pw_name
    with inst.start():
        # The local user exists only in /etc/passwd, which the jail hides from smtpd.
        send(inst, f"{user}@{DOMAIN}", "to-local-user")
        maildir = Path(account.pw_dir) / "Maildir"
        text = inst.maildir_message_with(maildir, "to-local-user", timeout=30)
        assert f"for <{user}@{DOMAIN}>" in text or f"{user}@{DOMAIN}" in text
        assert (maildir / "new").stat().st_uid == account.pw_uid
        inst.wait_for_log(rf"postfix/local\[\d+\]: \w+: to=<{user}@{DOMAIN}>, "
                          r"relay=local, .*status=sent \(delivered to maildir\)")

        # ... and that smtpd really was in its jail.
        smtpd = int(inst.wait_for_log(r"postfix/smtpd\[(\d+)\]: connect from").group(1))
        assert os.readlink(f"/proc/{smtpd}/root") == str(inst.queue_dir)

        # Nobody by that name: refused for the right reason, not a temporary failure.
        code, text = rcpt(inst, f"nosuchuser@{DOMAIN}")
        assert code == 550, text
        assert b"User unknown in local recipient table" in text

        send(inst, "someone@far.example", "relayed")
        inst.wait_for_log(r"postfix/smtp\[\d+\]: \w+: to=<someone@far\.example>, "
                          rf"relay=127\.0\.0\.2\[127\.0\.0\.2\]:{sink}, .*status=sent \(250 ",
                          timeout=30)

        send(inst, f"v@{VIRTUAL}", "to-virtual-user")
        inst.maildir_message_with(inst.mailbox_dir / VIRTUAL / "v", "to-virtual-user",
                                  timeout=30)

        # postmap -q through the running proxymap service, and its refusal of a
        # table that proxy_read_maps does not list.
        found = inst.command("postmap", "-c", str(inst.config_dir), "-q", user,
                             "proxy:unix:passwd.byname")
        assert found.returncode == 0, found.stderr
        assert found.stdout.decode().startswith(f"{user}:x:{account.pw_uid}:")
        missing = inst.command("postmap", "-c", str(inst.config_dir), "-q", "no-such-user-x",
                               "proxy:unix:passwd.byname")
        assert missing.returncode == 1, missing.stderr
        refused = inst.command("postmap", "-c", str(inst.config_dir), "-q", "a",
                               "proxy:inline:{a=b}")
        assert refused.returncode != 0 and refused.stdout == b""
        assert b'proxymap service is not configured for table "inline:{a=b}"' in refused.stderr
        inst.wait_for_log(r'postfix/proxymap\[\d+\]: warning: request for unapproved table: '
                          r'"inline:\{a=b\}"')
        # postmap's own fatal above is Postfix's answer; no service may have one.
        assert not re.search(r"(?m)postfix/(?!postmap\[)\S+: (fatal|panic):", inst.log_text())


def test_debians_postscreen_lines_uncommented(tmp_path, sink, account):
    """Debian's master.cf with postscreen, smtpd pass, dnsblog and tlsproxy
    uncommented: postscreen (chrooted) screens the client and passes it to
    the chrooted smtpd, which delivers; a denylisted client is refused, and
    one that the (chrooted) dnsblog finds listed is dropped."""
    with DnsServer({"10.0.0.127.zen.example": {"A": ["127.0.0.2"]}}) as dns:
        _postscreen_session(tmp_path, sink, account, dns.nameserver)


def _postscreen_session(tmp_path, sink, account, nameserver: str) -> None:
    inst = debian_instance(tmp_path, sink, postscreen=True, extra={
        "postscreen_greet_wait": "1s", "postscreen_denylist_action": "enforce",
        "postscreen_access_list": "cidr:$config_directory/postscreen_access",
        "postscreen_dnsbl_sites": "zen.example", "postscreen_dnsbl_action": "drop",
        "dns_nameservers": nameserver})
    (inst.config_dir / "postscreen_access").write_text("127.0.0.9/32 reject\n")
    master_cf = (inst.config_dir / "master.cf").read_text()
    assert re.search(r"(?m)^127\.0\.0\.1:\d+\s+inet\s.*postscreen$", master_cf)
    assert re.search(r"(?m)^#smtp\s+inet\s.*\ssmtpd$", master_cf)
    assert re.search(r"(?m)^smtpd\s+pass\s", master_cf)
    user = account.pw_name
    with inst.start():
        send(inst, f"{user}@{DOMAIN}", "through-postscreen")
        maildir = Path(account.pw_dir) / "Maildir"
        inst.maildir_message_with(maildir, "through-postscreen", timeout=30)
        inst.wait_for_log(r"postfix/postscreen\[\d+\]: PASS NEW \[127\.0\.0\.1\]:\d+$")
        smtpd = int(inst.wait_for_log(r"postfix/smtpd\[(\d+)\]: connect from "
                                      r"localhost\[127\.0\.0\.1\]").group(1))
        assert os.readlink(f"/proc/{smtpd}/root") == str(inst.queue_dir)
        postscreen = int(inst.wait_for_log(r"postfix/postscreen\[(\d+)\]: CONNECT").group(1))
        assert os.readlink(f"/proc/{postscreen}/root") == str(inst.queue_dir)

        # Back again: straight to smtpd from the cache.
        code, _ = rcpt(inst, f"{user}@{DOMAIN}")
        assert code == 250
        inst.wait_for_log(r"postfix/postscreen\[\d+\]: PASS OLD \[127\.0\.0\.1\]:\d+$")

        # Denied by the access list, enforced: refused at RCPT by postscreen itself.
        with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=30,
                          source_address=("127.0.0.9", 0)) as s:
            s.ehlo("client.example")
            s.mail("sender@client.example")
            assert s.rcpt(f"{user}@{DOMAIN}") == (550, b"5.3.2 Service currently unavailable")
        inst.wait_for_log(r"postfix/postscreen\[\d+\]: DENYLISTED \[127\.0\.0\.9\]:\d+$")
        inst.wait_for_log(r"postfix/postscreen\[\d+\]: NOQUEUE: reject: RCPT from "
                          r"\[127\.0\.0\.9\]:\d+: 550 5\.3\.2 Service currently unavailable;")
        with socket.create_connection(("127.0.0.1", inst.smtp_port), timeout=30,
                                      source_address=("127.0.0.10", 0)) as sock:
            reply = b""
            while chunk := sock.recv(4096):
                reply += chunk
        assert reply.endswith(b"521 5.7.1 Service unavailable; client [127.0.0.10] blocked "
                              b"using zen.example\r\n"), reply
        dnsblog = int(inst.wait_for_log(r"postfix/dnsblog\[(\d+)\]: addr 127\.0\.0\.10 listed "
                                        r"by domain zen\.example as 127\.0\.0\.2$").group(1))
        assert os.readlink(f"/proc/{dnsblog}/root") == str(inst.queue_dir)
        assert not re.search(r"(?m)postfix/\S+: (fatal|panic):", inst.log_text())
