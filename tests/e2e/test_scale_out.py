"""Scale-out: two pymaster instances that share their tables in real databases.

One MariaDB, one PostgreSQL, one slapd and one memcached on loopback hold
what both instances know (tests/support/databases.py, memcached.py):

    pgsql    virtual_mailbox_domains   (vdomain)      relay_recipient_maps (relay_rcpt)
             check_sender_access       (access)       smtpd_sender_login_maps (sender_login)
    mysql    virtual_mailbox_maps      (mailbox)
    ldap     virtual_alias_maps        (mailLocalAddress -> mailRoutingAddress)
    memcache check_helo_access         (helo:NAME; written through the table interface)
             address_verify_map        (not probed here; shared verify: test_verify_shared.py)

Each instance has its own queue and mailboxes. What this shows: both
answer alike from the shared data; a user inserted while both run is
accepted by both without a reload; MariaDB going down makes its lookups a
temporary failure (451 at RCPT, deferred deliveries), and once it is back
every one of 250 messages is delivered exactly once.
"""

from __future__ import annotations

import re
import smtplib
import uuid

import pytest

from tests.support.databases import (  # noqa: F401  (pytest fixtures)
    BASE_DN,
    DBNAME,
    PASSWORD,
    USER,
    mariadb,
    postgres,
    slapd,
)
from pymaster.util.tables import create_table
from tests.support.instance import ROOT, Instance, _open_path_for_others
from tests.support.memcached import Memcached, available
from tests.support.wait import wait_until

pytestmark = [
    pytest.mark.skipif(bool(available()), reason=available() or "ok"),
    pytest.mark.skipif(not (ROOT / "libexec" / "virtual").exists(),
                       reason="needs the virtual service"),
]

DOMAIN = "virt.example"
RELAY = "relay.example"
MESSAGES = 250
SENDER = "someone@client.example"


def load_data(mariadb, postgres, slapd) -> None:
    mariadb.execute(
        "DROP TABLE IF EXISTS mailbox",
        "CREATE TABLE mailbox (address VARCHAR(255) PRIMARY KEY, maildir VARCHAR(255))",
        f"INSERT INTO mailbox VALUES ('user1@{DOMAIN}', '{DOMAIN}/user1/'),"
        f" ('user2@{DOMAIN}', '{DOMAIN}/user2/')",
        f"GRANT SELECT ON {DBNAME}.* TO '{USER}'@'%'", database=DBNAME)
    postgres.execute(
        "DROP TABLE IF EXISTS vdomain, relay_rcpt, access, sender_login",
        "CREATE TABLE vdomain (domain TEXT PRIMARY KEY)",
        "CREATE TABLE relay_rcpt (address TEXT PRIMARY KEY)",
        "CREATE TABLE access (key TEXT PRIMARY KEY, action TEXT)",
        "CREATE TABLE sender_login (sender TEXT PRIMARY KEY, owner TEXT)",
        f"INSERT INTO sender_login VALUES ('user1@{DOMAIN}', 'user1')",
        f"INSERT INTO vdomain VALUES ('{DOMAIN}')",
        f"INSERT INTO relay_rcpt VALUES ('known@{RELAY}')",
        "INSERT INTO access VALUES ('spammer@bad.example', 'REJECT no mail from you')",
        f"GRANT SELECT ON vdomain, relay_rcpt, access, sender_login TO {USER}")
    tag = uuid.uuid4().hex[:8]      # the session's slapd may hold earlier runs' entries
    slapd.add(f"dn: ou=aliases{tag},{BASE_DN}\nobjectClass: organizationalUnit\n"
              f"ou: aliases{tag}\n\n"
              f"dn: cn=alias,ou=aliases{tag},{BASE_DN}\nobjectClass: person\n"
              "objectClass: inetLocalMailRecipient\ncn: alias\nsn: alias\n"
              f"mailLocalAddress: alias@{DOMAIN}\nmailRoutingAddress: user1@{DOMAIN}\n")


def table_files(directory, mariadb, postgres, slapd, memcached) -> dict[str, str]:
    """table_files - the .cf files both instances use; main.cf settings naming them."""
    mysql = (f"hosts = inet:127.0.0.1:{mariadb.port}\nuser = {USER}\npassword = {PASSWORD}\n"
             f"dbname = {DBNAME}\nretry_interval = 1\n")
    pgsql = (f"hosts = inet:127.0.0.1:{postgres.port}\nuser = {USER}\npassword = {PASSWORD}\n"
             f"dbname = {DBNAME}\nretry_interval = 1\n")
    files = {
        "mailbox.cf": mysql + "query = SELECT maildir FROM mailbox WHERE address='%s'\n",
        "login.cf": pgsql + "query = SELECT owner FROM sender_login WHERE sender='%s'\n",
        "domains.cf": pgsql + "query = SELECT domain FROM vdomain WHERE domain='%s'\n",
        "relay.cf": pgsql + "query = SELECT address FROM relay_rcpt WHERE address='%s'\n",
        "access.cf": pgsql + "query = SELECT action FROM access WHERE key='%s'\n",
        "aliases.cf": (f"server_host = ldap://127.0.0.1:{slapd.port}\nsearch_base = {BASE_DN}\n"
                       "query_filter = (mailLocalAddress=%s)\n"
                       "result_attribute = mailRoutingAddress\nbind = no\n"),
        "verify.cf": f"memcache = {memcached.server}\nkey_format = verify:%s\n",
        "helo.cf": f"memcache = {memcached.server}\nkey_format = helo:%s\n",
    }
    for name, text in files.items():
        path = directory / name
        path.write_text(text)
        path.chmod(0o644)
    _open_path_for_others(directory)
    return {
        "virtual_mailbox_domains": f"pgsql:{directory}/domains.cf",
        "virtual_mailbox_maps": f"mysql:{directory}/mailbox.cf",
        "virtual_alias_maps": f"ldap:{directory}/aliases.cf",
        "relay_domains": RELAY,
        "relay_recipient_maps": f"pgsql:{directory}/relay.cf",
        "relay_transport": "discard:relayed",
        "smtpd_sender_login_maps": f"pgsql:{directory}/login.cf",
        "smtpd_recipient_restrictions": (f"check_sender_access pgsql:{directory}/access.cf, "
                                         f"check_helo_access memcache:{directory}/helo.cf, "
                                         "reject_unauthenticated_sender_login_mismatch, "
                                         "permit_mynetworks, reject_unauth_destination"),
        "address_verify_map": f"memcache:{directory}/verify.cf",
        "address_verify_cache_cleanup_interval": "0",
    }


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """shared - the directory of the table files both instances read."""
    return tmp_path_factory.mktemp("tables")


@pytest.fixture(scope="module")
def cluster(shared, mariadb, postgres, slapd, tmp_path_factory):  # noqa: F811
    load_data(mariadb, postgres, slapd)
    with Memcached() as memcached:
        settings = {"myhostname": "mx.example.com", "mydestination": "localhost",
                    # A deferred delivery is tried again soon (the test flushes too).
                    "minimal_backoff_time": "1s", "maximal_backoff_time": "2s",
                    "queue_run_delay": "1s",
                    **table_files(shared, mariadb, postgres, slapd, memcached)}
        with Instance(tmp_path_factory.mktemp("one"), main_cf=settings) as one, \
                Instance(tmp_path_factory.mktemp("two"), main_cf=settings) as two:
            yield mariadb, (one, two)


def rcpt(inst: Instance, recipient: str, sender: str = SENDER,
         helo: str = "client.example") -> tuple[int, str]:
    """rcpt - the reply to MAIL FROM (if refused) or RCPT TO in a new session."""
    with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=120) as smtp:
        smtp.ehlo(helo)
        code, text = smtp.mail(sender)
        if code == 250:
            code, text = smtp.rcpt(recipient)
        smtp.rset()
        return code, text.decode()


def send(inst: Instance, recipient: str, tokens: list[str]) -> None:
    """send - one message per token to RECIPIENT in one session; each 250."""
    with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=120) as smtp:
        for token in tokens:
            smtp.sendmail(SENDER, [recipient], f"Subject: {token}\r\n\r\n{token}\r\n")


def maildir_tokens(inst: Instance, user: str) -> list[str]:
    """maildir_tokens - the scale-out token of each message in USER's Maildir
    (one per file: the subject and the body carry the same one)."""
    new = inst.mailbox_dir / DOMAIN / user / "new"
    if not new.is_dir():
        return []
    tokens = []
    for f in new.iterdir():
        found = set(re.findall(rb"scale-[0-9a-z]+-\d+", f.read_bytes()))
        tokens += [t.decode() for t in found]
    return tokens


def test_both_instances_answer_from_the_databases(cluster):
    _, instances = cluster
    for inst in instances:
        assert rcpt(inst, f"user1@{DOMAIN}")[0] == 250                    # mysql
        assert rcpt(inst, f"alias@{DOMAIN}")[0] == 250                    # ldap
        assert rcpt(inst, f"known@{RELAY}")[0] == 250                     # pgsql
        code, text = rcpt(inst, f"nobody@{DOMAIN}")
        assert (code, "User unknown in virtual mailbox table" in text) == (550, True), text
        code, text = rcpt(inst, f"unknown@{RELAY}")
        assert (code, "User unknown in relay recipient table" in text) == (550, True), text
        code, text = rcpt(inst, f"user1@{DOMAIN}", sender="spammer@bad.example")
        assert (code, text) == (554, "5.7.1 <spammer@bad.example>: Sender address rejected: "
                                     "no mail from you")
        code, text = rcpt(inst, f"user2@{DOMAIN}", sender=f"user1@{DOMAIN}")
        assert (code, text) == (553, f"5.7.1 <user1@{DOMAIN}>: Sender address rejected: "
                                     "not logged in")


def test_a_helo_block_written_to_memcache_holds_on_both(cluster, shared):
    _, instances = cluster
    helo_cf = shared / "helo.cf"
    for inst in instances:
        assert rcpt(inst, f"user1@{DOMAIN}", helo="bad.helo.example")[0] == 250
    create_table(f"memcache:{helo_cf}").update("bad.helo.example", "REJECT go away")
    for inst in instances:
        code, text = rcpt(inst, f"user1@{DOMAIN}", helo="bad.helo.example")
        assert (code, text) == (554, "5.7.1 <bad.helo.example>: Helo command rejected: "
                                     "go away")


def test_alias_from_ldap_delivers_to_the_mysql_mailbox(cluster):
    _, (one, two) = cluster
    send(one, f"alias@{DOMAIN}", ["scale-a1-1"])
    send(two, f"alias@{DOMAIN}", ["scale-a1-2"])
    for inst, token in ((one, "scale-a1-1"), (two, "scale-a1-2")):
        wait_until(lambda: token in maildir_tokens(inst, "user1"), 60,
                   f"{token} in user1's Maildir of {inst.tmp}")


def test_a_user_added_while_both_run_is_accepted_by_both(cluster):
    mariadb, instances = cluster
    for inst in instances:
        assert rcpt(inst, f"newcomer@{DOMAIN}")[0] == 550
    mariadb.execute(f"INSERT INTO mailbox VALUES ('newcomer@{DOMAIN}', '{DOMAIN}/newcomer/')",
                    database=DBNAME)
    for inst in instances:
        assert rcpt(inst, f"newcomer@{DOMAIN}")[0] == 250


def test_database_down_defers_and_nothing_is_lost(cluster):
    mariadb, (one, two) = cluster
    run = uuid.uuid4().hex[:6]
    tokens = [f"scale-{run}-{i}" for i in range(MESSAGES)]
    mariadb.stop()
    try:
        for inst in (one, two):
            code, text = rcpt(inst, f"user2@{DOMAIN}")
            assert (code, text.startswith("4.3.0 ")) == (451, True), (code, text)
        # Mail to the LDAP alias is accepted (LDAP is up) and cannot be
        # delivered: its mailbox is in MariaDB. Both queues fill, in
        # sessions of 25 messages.
        half = MESSAGES // 2
        for inst, batch in ((one, tokens[:half]), (two, tokens[half:])):
            for start in range(0, len(batch), 25):
                send(inst, f"alias@{DOMAIN}", batch[start:start + 25])
        for inst in (one, two):
            inst.wait_for_log(r"virtual\[\d+\]: \w+: to=<user1@virt\.example>, "
                              r"orig_to=<alias@virt\.example>, .*status=deferred", 60)
    finally:
        mariadb.start()
    for inst in (one, two):
        inst.postfix("flush")
    wait_until(lambda: len(delivered(one, two, run)) >= MESSAGES, 300,
               lambda: f"{len(delivered(one, two, run))} of {MESSAGES} delivered")
    found = delivered(one, two, run)
    assert sorted(found) == sorted(tokens)          # each exactly once, none missing
    for inst in (one, two):
        wait_until(lambda: inst.command("postqueue", "-j").stdout.strip() == b"", 60,
                   f"an empty queue in {inst.tmp}")


def delivered(one: Instance, two: Instance, run: str) -> list[str]:
    """delivered - the tokens of run RUN in user1's Maildirs of both instances."""
    return [t for inst in (one, two) for t in maildir_tokens(inst, "user1")
            if t.startswith(f"scale-{run}-")]
