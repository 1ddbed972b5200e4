"""Real database servers for the table tests: MariaDB, PostgreSQL and slapd.

Each server is started from its Debian package in a fresh directory under
/tmp (short paths: unix socket names must stay under 108 bytes), listens on
a unix socket and on 127.0.0.1 at a free port, and is stopped (and its
directory removed) when the test session ends. The system's own instances
are never used. As root, each runs as its package's account (mysql,
postgres, openldap): PostgreSQL refuses root, the others are kept alike.
A missing binary skips the tests that need it, saying which.

Every server has a database (or directory) for the tests and an account
with a password:
    MariaDB     database `mail`, user `postfix` / `secret` (also root over the socket)
    PostgreSQL  database `mail`, user `postfix` / `secret` (superuser `postgres`
                over the socket)
    slapd       suffix dc=example,dc=com, admin cn=admin,dc=example,dc=com /
                `secret`, an anonymous-readable directory; schemas core, cosine,
                inetorgperson, nis, misc, dyngroup

Interface:
    MariaDB(), PostgreSQL(), Slapd()      .start() .stop() .up .socket .port
        MariaDB.execute(sql...)  PostgreSQL.execute(sql...)  Slapd.add(ldif)
        MariaDB.tls, .ca_file: TLS with a self-signed certificate (openssl)
        Slapd.url, .ldapi, .ldaps_url ("" without openssl), .ca_file (its
        self-signed certificate, for 127.0.0.1 and localhost: STARTTLS too)
        .restart()   stop and start again on the same port and data
    mariadb, postgres, slapd              session-scoped pytest fixtures
                                          (import them into a test module)
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.support.instance import free_port
from tests.support.wait import wait_until

START_TIMEOUT = 60
USER = "postfix"
PASSWORD = "secret"
DBNAME = "mail"
BASE_DN = "dc=example,dc=com"
ADMIN_DN = f"cn=admin,{BASE_DN}"


def _account(name: str) -> pwd.struct_passwd | None:
    """The account a server runs as: NAME when root, None (ourselves) otherwise."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pytest.skip(f"no {name} account to run the server as")


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Server:
    """What the three servers share: a directory, a process, a port."""

    account = ""
    name = ""
    stop_signal = signal.SIGTERM

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"pm{self.name}-"))
        os.chmod(self.dir, 0o755)
        self.user = _account(self.account)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def _chown(self, *paths: Path) -> None:
        if self.user is not None:
            for path in paths:
                os.chown(path, self.user.pw_uid, self.user.pw_gid)

    def _run_as(self, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
        if self.user is not None:
            argv = ["runuser", "-u", self.user.pw_name, "--", *argv]
        return subprocess.run(argv, capture_output=True, text=True, **kwargs)

    def _spawn(self, argv: list[str], log: Path) -> None:
        # Started as the account directly (no runuser between): the signal
        # that stops it reaches the server itself.
        ids: dict = {}
        if self.user is not None:
            ids = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True, **ids)
        wait_until(lambda: _listening(self.port) or self.proc.poll() is not None,
                   START_TIMEOUT, f"{self.name} listening on {self.port}")
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} did not start: {log.read_text()[-2000:]}")

    @property
    def up(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """stop - end the server and wait for it (its data stays)."""
        if self.up:
            assert self.proc is not None
            os.killpg(self.proc.pid, self.stop_signal)
            try:
                self.proc.wait(START_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        wait_until(lambda: not _listening(self.port), START_TIMEOUT,
                   f"{self.name} gone from {self.port}")

    def restart(self) -> None:
        self.stop()
        self.start()

    def start(self) -> None:
        raise NotImplementedError

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class MariaDB(Server):
    """mariadbd with its own data directory."""

    account = "mysql"
    name = "mariadb"

    def __init__(self) -> None:
        for binary in ("mariadbd", "mariadb-install-db"):
            if not shutil.which(binary) and not os.path.exists(f"/usr/sbin/{binary}"):
                pytest.skip(f"{binary} is not installed (Debian package mariadb-server)")
        super().__init__()
        self.data = self.dir / "data"
        self.socket = str(self.dir / "mysql.sock")
        self.tls = False                # TLS with ca_file, once a certificate is made
        self.ca_file = str(self.dir / "cert.pem")
        self._initialized = False

    def start(self) -> None:
        if not self._initialized:
            self._install()
        server = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
        tls = [f"--ssl-cert={self.dir}/cert.pem", f"--ssl-key={self.dir}/key.pem"] \
            if self.tls else []
        self._spawn([server, "--no-defaults", f"--datadir={self.data}", *tls,
                     f"--socket={self.socket}", f"--port={self.port}",
                     "--bind-address=127.0.0.1", f"--pid-file={self.dir}/mariadb.pid",
                     "--skip-log-bin", "--innodb-buffer-pool-size=16M",
                     f"--log-error={self.dir}/error.log", "--skip-name-resolve"],
                    self.dir / "server.log")
        if not self._initialized:
            self.execute(f"CREATE DATABASE {DBNAME}",
                         f"CREATE USER '{USER}'@'%' IDENTIFIED BY '{PASSWORD}'",
                         f"CREATE USER '{USER}'@'localhost' IDENTIFIED BY '{PASSWORD}'",
                         f"GRANT ALL ON {DBNAME}.* TO '{USER}'@'%'",
                         f"GRANT ALL ON {DBNAME}.* TO '{USER}'@'localhost'")
            self._initialized = True

    def _install(self) -> None:
        self.data.mkdir()
        self._chown(self.dir, self.data)
        self.tls = make_certificate(self.dir)
        if self.tls:
            self._chown(self.dir / "key.pem", self.dir / "cert.pem")
        done = self._run_as(["mariadb-install-db", "--no-defaults", f"--datadir={self.data}",
                             "--auth-root-authentication-method=normal", "--skip-test-db"],
                            timeout=START_TIMEOUT * 2)
        if done.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed: {done.stdout}{done.stderr}")

    def execute(self, *statements: str, database: str = "") -> list[tuple]:
        """execute - run STATEMENTS as root over the socket; the last one's rows."""
        import pymysql
        conn = pymysql.connect(unix_socket=self.socket, user="root", database=database or None,
                               autocommit=True)
        rows: list[tuple] = []
        try:
            with conn.cursor() as cur:
                for sql in statements:
                    cur.execute(sql)
                    rows = list(cur.fetchall())
        finally:
            conn.close()
        return rows


class PostgreSQL(Server):
    """postgres with its own cluster (initdb)."""

    account = "postgres"
    name = "pgsql"
    stop_signal = signal.SIGINT     # a fast shutdown: clients are disconnected

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
        if not found:
            pytest.skip("postgres is not installed (Debian package postgresql)")
        self.bin = Path(found[-1]).parent
        super().__init__()
        self.data = self.dir / "data"
        self.socket_dir = str(self.dir)
        self.socket = f"{self.dir}/.s.PGSQL.{self.port}"
        self._initialized = False

    def start(self) -> None:
        if not self._initialized:
            self._initdb()
        self._spawn([str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
                     "-h", "127.0.0.1", "-k", self.socket_dir, "-F",
                     "-c", "max_connections=50", "-c", "shared_buffers=16MB"],
                    self.dir / "server.log")
        # Listening comes before accepting sessions ("the database system is
        # starting up"): ready is when a query works.
        wait_until(self._ready, START_TIMEOUT, "postgres accepting sessions")
        if not self._initialized:
            self.execute(f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'",
                         f"CREATE DATABASE {DBNAME} OWNER {USER}", database="postgres")
            self._initialized = True

    def _ready(self) -> bool:
        try:
            self.execute("SELECT 1", database="postgres")
        except Exception:               # psycopg.OperationalError while it starts
            return False
        return True

    def _initdb(self) -> None:
        self._chown(self.dir)
        done = self._run_as([str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                             "--auth-local=trust", "--auth-host=scram-sha-256",
                             "-E", "UTF8", "--locale=C.UTF-8"], timeout=START_TIMEOUT * 2)
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stdout}{done.stderr}")

    def execute(self, *statements: str, database: str = DBNAME) -> list[tuple]:
        """execute - run STATEMENTS as the superuser over the socket; the last one's rows."""
        import psycopg
        rows: list[tuple] = []
        with psycopg.connect(host=self.socket_dir, port=self.port, user="postgres",
                             dbname=database, autocommit=True) as conn:
            for sql in statements:
                cur = conn.execute(sql)
                rows = list(cur.fetchall()) if cur.description else []
        return rows


SLAPD_CONF = """\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
include /etc/ldap/schema/misc.schema
include /etc/ldap/schema/dyngroup.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {dir}/slapd.pid
sizelimit unlimited
database mdb
maxsize 33554432
suffix "{base}"
rootdn "{admin}"
rootpw {password}
directory {dir}/data
index objectClass,uid,mail,mailLocalAddress eq
access to * by * read
"""

SLAPD_TLS = """TLSCertificateFile {dir}/cert.pem
TLSCertificateKeyFile {dir}/key.pem
"""


def make_certificate(directory: Path) -> bool:
    """make_certificate - DIRECTORY/cert.pem and key.pem, self-signed for
    127.0.0.1 and localhost (the cert is its own CA); False without openssl."""
    if not shutil.which("openssl"):
        return False
    done = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(directory / "key.pem"), "-out", str(directory / "cert.pem"),
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        capture_output=True, text=True, timeout=START_TIMEOUT)
    return done.returncode == 0


class Slapd(Server):
    """slapd with a slapd.conf and an mdb database."""

    account = "openldap"
    name = "slapd"

    def __init__(self) -> None:
        if not os.path.exists("/usr/sbin/slapd"):
            pytest.skip("slapd is not installed (Debian package slapd)")
        if not shutil.which("ldapadd"):
            pytest.skip("ldapadd is not installed (Debian package ldap-utils)")
        super().__init__()
        self.socket = str(self.dir / "ldapi")
        self.url = f"ldap://127.0.0.1:{self.port}"
        self.ldapi = "ldapi://" + self.socket.replace("/", "%2F")
        self.tls_port = free_port()
        self.ldaps_url = ""             # set when a certificate could be made
        self.ca_file = str(self.dir / "cert.pem")
        self._initialized = False

    def start(self) -> None:
        if not self._initialized:
            (self.dir / "data").mkdir()
            conf = SLAPD_CONF
            if make_certificate(self.dir):
                conf = SLAPD_TLS + conf
                self.ldaps_url = f"ldaps://127.0.0.1:{self.tls_port}"
                self._chown(self.dir / "key.pem", self.dir / "cert.pem")
            (self.dir / "slapd.conf").write_text(conf.format(
                dir=self.dir, base=BASE_DN, admin=ADMIN_DN, password=PASSWORD))
            self._chown(self.dir, self.dir / "data", self.dir / "slapd.conf")
        urls = f"{self.url}/ {self.ldapi} {self.ldaps_url + '/' if self.ldaps_url else ''}"
        # -d keeps slapd in the foreground, where the fixture can stop it.
        self._spawn(["/usr/sbin/slapd", "-d", "0", "-f", str(self.dir / "slapd.conf"),
                     "-h", urls.strip()], self.dir / "server.log")
        if not self._initialized:
            self.add(f"dn: {BASE_DN}\nobjectClass: dcObject\nobjectClass: organization\n"
                     "o: example\ndc: example\n")
            self._initialized = True

    def add(self, ldif: str) -> None:
        """add - load LDIF entries as the admin DN."""
        done = subprocess.run(["ldapadd", "-x", "-H", self.url, "-D", ADMIN_DN,
                               "-w", PASSWORD], input=ldif, capture_output=True, text=True,
                              timeout=START_TIMEOUT)
        if done.returncode != 0:
            raise RuntimeError(f"ldapadd failed: {done.stderr}")


def _session_server(cls):
    server = cls()
    try:
        server.start()
    except Exception:
        server.remove()
        raise
    return server


@pytest.fixture(scope="session")
def mariadb():
    server = _session_server(MariaDB)
    yield server
    server.remove()


@pytest.fixture(scope="session")
def postgres():
    server = _session_server(PostgreSQL)
    yield server
    server.remove()


@pytest.fixture(scope="session")
def slapd():
    server = _session_server(Slapd)
    yield server
    server.remove()


# -- table files and postmap, for the table tests --------------------------------

PYMASTER_POSTMAP = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "postmap")
DEBIAN_POSTMAP = "/usr/sbin/postmap"


def write_cf(path: Path, settings: dict[str, str]) -> Path:
    """write_cf - a table's .cf file of `name = value` lines."""
    path.write_text("".join(f"{name} = {value}\n" for name, value in settings.items()))
    return path


def debian_supports(type_: str, config_dir: str) -> str:
    """debian_supports - "" when Debian's postmap can read TYPE tables, else why not."""
    if not os.path.exists(DEBIAN_POSTMAP):
        return "Debian's postmap is not installed (Debian package postfix)"
    probe = subprocess.run([DEBIAN_POSTMAP, "-c", config_dir, "-q", "x", f"{type_}:/dev/null"],
                           capture_output=True, text=True, timeout=30)
    if "unsupported dictionary type" in probe.stderr:
        return f"Debian's postmap has no {type_}: table (install postfix-{type_})"
    return ""


def postmap_query(program: str, config_dir: str, key: str,
                  spec: str) -> subprocess.CompletedProcess:
    """postmap_query - PROGRAM -q KEY SPEC (ours or Debian's), its output kept."""
    return subprocess.run([program, "-c", config_dir, "-q", key, spec],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def postmap_config(tmp_path_factory) -> str:
    """postmap_config - an empty main.cf's directory for postmap -c."""
    path = tmp_path_factory.mktemp("config")
    (path / "main.cf").write_text("")
    return str(path)
