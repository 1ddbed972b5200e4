"""End to end: a mysql: table in main.cf, with the real master and a real
MariaDB. While the server is down smtpd answers `451 4.3.0 <…>: Temporary
lookup failure` and stays up; when it is back the next lookup works.
proxy:mysql: goes through the proxymap service, which refuses a table that
proxy_read_maps does not list. As root, mysql:, pgsql: and ldap: tables
are asked from chrooted smtpd and cleanup processes."""

from __future__ import annotations

import re
import smtplib

import pytest

from tests.e2e.test_jail import chrooted
from tests.support.databases import (  # noqa: F401  (fixtures)
    BASE_DN,
    DBNAME,
    PASSWORD,
    USER,
    mariadb,
    postgres,
    slapd,
    write_cf,
)
from tests.support.instance import Instance, is_root
from tests.support.wait import wait_until

VIRTUAL = "virtual.example"


@pytest.fixture(scope="module")
def db(mariadb):  # noqa: F811
    mariadb.execute("DROP TABLE IF EXISTS valias",
                    "CREATE TABLE valias (address VARCHAR(255), goto VARCHAR(255))",
                    f"INSERT INTO valias VALUES ('alias@{VIRTUAL}', 'first@localhost')",
                    database=DBNAME)
    return mariadb


def table_cf(inst: Instance, db, name: str = "valias.cf") -> str:  # noqa: F811
    return str(write_cf(inst.config_dir / name, {
        "hosts": f"inet:127.0.0.1:{db.port}", "user": USER, "password": PASSWORD,
        "dbname": DBNAME, "query": "SELECT goto FROM valias WHERE address='%s'",
        "retry_interval": "1"}))


def rcpt(client: smtplib.SMTP, address: str) -> tuple[int, bytes]:
    client.rset()
    client.mail("sender@client.example")
    return client.rcpt(address)


def test_mysql_lookup_fails_temporarily_while_the_server_is_down(tmp_path, db):  # noqa: F811
    with Instance(tmp_path, start=False) as inst:
        cf = table_cf(inst, db)
        inst.set_main_cf({"virtual_alias_domains": VIRTUAL,
                          "virtual_alias_maps": f"mysql:{cf}"})
        inst.start()
        with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=60) as client:
            client.ehlo("client.example")
            assert rcpt(client, f"alias@{VIRTUAL}")[0] == 250
            assert rcpt(client, f"unknown@{VIRTUAL}")[0] == 550
            client.rset()
            client.sendmail("sender@client.example", [f"alias@{VIRTUAL}"],
                            "Subject: via-mysql\n\nbody\n")
            inst.maildir_message_with(inst.mailbox_dir / "localhost" / "first", "via-mysql")

            db.stop()
            try:
                code, text = rcpt(client, f"alias@{VIRTUAL}")
                assert (code, text) == (451, f"4.3.0 <alias@{VIRTUAL}>: Temporary lookup "
                                             "failure".encode())
                assert client.noop()[0] == 250          # the session goes on
            finally:
                db.start()
            wait_until(lambda: rcpt(client, f"alias@{VIRTUAL}")[0] == 250,
                       what="a lookup after the server came back", interval=0.3)
        inst.wait_for_log(r"postfix/smtpd\[\d+\]: warning: connect to mysql server ")
        assert not re.search(r"(?m)postfix/\S+: (fatal|panic):", inst.log_text())


def test_proxy_mysql_through_proxymap(tmp_path, db):  # noqa: F811
    with Instance(tmp_path, start=False) as inst:
        cf = table_cf(inst, db)
        other = table_cf(inst, db, "other.cf")
        inst.set_main_cf({"virtual_alias_domains": VIRTUAL,
                          "virtual_alias_maps": f"proxy:mysql:{cf}"})
        inst.start()
        with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=60) as client:
            client.ehlo("client.example")
            assert rcpt(client, f"alias@{VIRTUAL}")[0] == 250
            assert rcpt(client, f"unknown@{VIRTUAL}")[0] == 550
        found = inst.command("postmap", "-c", str(inst.config_dir), "-q", f"alias@{VIRTUAL}",
                             f"proxy:mysql:{cf}")
        assert (found.returncode, found.stdout) == (0, b"first@localhost\n"), found.stderr
        # The lookups were the proxymap service's: its process holds the connection.
        assert wait_until(lambda: _proxymap_connected(db), what="proxymap's connection")

        refused = inst.command("postmap", "-c", str(inst.config_dir), "-q", f"alias@{VIRTUAL}",
                               f"proxy:mysql:{other}")
        assert refused.returncode != 0 and refused.stdout == b""
        assert f'proxymap service is not configured for table "mysql:{other}"'.encode() \
            in refused.stderr
        inst.wait_for_log(r'postfix/proxymap\[\d+\]: warning: request for unapproved table: '
                          rf'"mysql:{re.escape(other)}"')


def _proxymap_connected(db) -> bool:  # noqa: F811
    """Whether a client whose program is proxymap holds a connection to DB."""
    import psutil
    rows = db.execute("SELECT HOST FROM information_schema.PROCESSLIST "
                      f"WHERE USER = '{USER}'")
    ports = {int(host.rpartition(":")[2]) for (host,) in rows if ":" in host}
    for conn in psutil.net_connections("tcp"):
        if conn.laddr and conn.laddr.port in ports and conn.pid:
            if "proxymap" in " ".join(psutil.Process(conn.pid).cmdline()):
                return True
    return False


@pytest.mark.skipif(not is_root(), reason="chroot needs root")
def test_every_database_type_in_the_jail(tmp_path, db, postgres, slapd):  # noqa: F811
    """smtpd and cleanup chrooted as Debian's master.cf has them: each imports
    its drivers before the jail and then asks MariaDB, PostgreSQL and slapd
    over TCP (RCPT checks in smtpd, alias expansion in cleanup)."""
    postgres.execute("DROP TABLE IF EXISTS valias",
                     "CREATE TABLE valias (address text, goto text)",
                     f"INSERT INTO valias VALUES ('pg@{VIRTUAL}', 'second@localhost')",
                     f"GRANT SELECT ON valias TO {USER}")
    if not getattr(slapd, "_jail_entry", False):
        slapd.add(f"dn: uid=jail,{BASE_DN}\nobjectClass: inetOrgPerson\n"
                  "objectClass: inetLocalMailRecipient\nuid: jail\ncn: j\nsn: j\n"
                  f"mailLocalAddress: ldap@{VIRTUAL}\nmailRoutingAddress: third@localhost\n")
        slapd._jail_entry = True
    inst = Instance(tmp_path, start=False)
    inst._master_cf = chrooted(inst._shipped_master_cf())
    with inst:
        inst.write_config()
        mysql_cf = table_cf(inst, db)
        pgsql_cf = write_cf(inst.config_dir / "pg.cf", {
            "hosts": f"inet:127.0.0.1:{postgres.port}", "user": USER, "password": PASSWORD,
            "dbname": DBNAME, "query": "SELECT goto FROM valias WHERE address='%s'"})
        ldap_cf = write_cf(inst.config_dir / "ldap.cf", {
            "server_host": slapd.url, "search_base": BASE_DN, "version": "3",
            "query_filter": "(mailLocalAddress=%s)", "result_attribute": "mailRoutingAddress"})
        inst.set_main_cf({"virtual_alias_domains": VIRTUAL, "virtual_alias_maps":
                          f"mysql:{mysql_cf} pgsql:{pgsql_cf} ldap:{ldap_cf}"})
        inst.start()
        with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=60) as client:
            client.ehlo("client.example")
            assert rcpt(client, f"unknown@{VIRTUAL}")[0] == 550
            for alias in ("alias", "pg", "ldap"):
                client.rset()
                client.sendmail("sender@client.example", [f"{alias}@{VIRTUAL}"],
                                f"Subject: jail-{alias}\n\nbody\n")
        for alias, box in (("alias", "first"), ("pg", "second"), ("ldap", "third")):
            inst.maildir_message_with(inst.mailbox_dir / "localhost" / box, f"jail-{alias}",
                                      timeout=30)
        assert not re.search(r"(?m)postfix/\S+: (fatal|panic|warning):", inst.log_text()), \
            inst.log_text()[-3000:]
