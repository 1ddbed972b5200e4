"""pymaster.commands.check: each fault `postfix check` must find, planted one at a time.

Every test builds a clean configuration and queue (which checks clean), plants
one fault and expects the warning Postfix's postfix-script would print for it.
Owner and mode faults need root; they skip elsewhere.
"""

from __future__ import annotations

import grp
import os
import pwd
import time
from pathlib import Path

import pytest

from pymaster.commands import check
from pymaster.mail.config import load_config

LIBEXEC = Path(__file__).resolve().parents[1] / "libexec"
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="owners and modes need root")


def have_accounts() -> bool:
    try:
        pwd.getpwnam("postfix")
        grp.getgrnam("postdrop")
        return True
    except KeyError:
        return False


def make_config(tmp_path: Path, main_cf: str = "", master_cf: str | None = None):
    """make_config - a config directory and a queue with Postfix's layout."""
    etc = tmp_path / "etc"
    etc.mkdir()
    owner = "postfix" if os.geteuid() == 0 and have_accounts() else \
        pwd.getpwuid(os.getuid()).pw_name
    (etc / "main.cf").write_text(
        f"queue_directory = {tmp_path}/spool\n"
        f"data_directory = {tmp_path}/data\n"
        f"daemon_directory = {LIBEXEC}\n"
        f"mail_owner = {owner}\n" + main_cf)
    (etc / "master.cf").write_text(master_cf if master_cf is not None else
                                   "smtp inet n - n - - smtpd\n"
                                   "cleanup unix n - n - 0 cleanup\n")
    cfg = load_config(str(etc))
    check.set_permissions(cfg)
    return cfg


def problems(cfg) -> list[str]:
    return check.check(load_config(cfg.config_dir))


class TestClean:
    def test_a_fresh_layout_checks_clean(self, tmp_path):
        cfg = make_config(tmp_path)
        assert problems(cfg) == []


class TestConfiguration:
    def test_a_misspelt_parameter_is_named_with_its_file(self, tmp_path):
        cfg = make_config(tmp_path, "mydestinaton = example.com\n")
        assert f"{cfg.config_dir}/main.cf: unused parameter: mydestinaton=example.com" \
            in problems(cfg)

    def test_a_postfix_parameter_pymaster_ignores_is_said_plainly(self, tmp_path):
        cfg = make_config(tmp_path, "biff = no\n")
        assert f"{cfg.config_dir}/main.cf: parameter not implemented by pymaster, " \
               "ignored: biff" in problems(cfg)

    def test_parameters_the_code_reads_are_not_reported(self, tmp_path):
        cfg = make_config(tmp_path, "mydestination = example.com\nmyhostname = mx.example.com\n")
        assert problems(cfg) == []

    def test_a_master_cf_command_that_does_not_exist(self, tmp_path):
        cfg = make_config(tmp_path, master_cf="ghost unix - - n - - no-such-daemon\n")
        assert f"{LIBEXEC}/no-such-daemon: not found or not executable " \
               "(master.cf service ghost/unix)" in problems(cfg)

    def test_a_daemon_directory_of_compiled_programs_is_not_pymasters(self, tmp_path):
        daemons = tmp_path / "postfix-sbin"
        daemons.mkdir()
        (daemons / "smtpd").write_bytes(b"\x7fELF\x02\x01")
        os.chmod(daemons / "smtpd", 0o755)
        cfg = make_config(tmp_path, f"daemon_directory = {daemons}\n",
                          master_cf="smtp inet n - n - - smtpd\n")
        assert f"{daemons}/smtpd: not a pymaster program (master.cf service smtp/inet)" \
            in problems(cfg)

    def test_a_master_cf_that_does_not_parse_is_an_error_with_its_line(self, tmp_path):
        cfg = make_config(tmp_path, master_cf="smtp inet n - n - - smtpd\nbroken unix - n\n")
        error = check.master_cf_error(cfg)
        assert error.startswith(f"{cfg.config_dir}/master.cf: line 2: bad field count")

    def test_a_good_master_cf_has_no_error(self, tmp_path):
        assert check.master_cf_error(make_config(tmp_path)) is None


class TestTables:
    def test_a_database_older_than_its_source(self, tmp_path):
        cfg = make_config(tmp_path, f"virtual_alias_maps = hash:{tmp_path}/etc/virtual\n")
        source = tmp_path / "etc" / "virtual"
        source.write_text("a@example.com b@example.com\n")
        db = tmp_path / "etc" / "virtual.db"
        db.write_bytes(b"")
        past = time.time() - 60
        os.utime(db, (past, past))
        assert f"database {db} is older than source file {source}" in problems(cfg)

    def test_a_database_newer_than_its_source_is_fine(self, tmp_path):
        cfg = make_config(tmp_path, f"virtual_alias_maps = hash:{tmp_path}/etc/virtual\n")
        source = tmp_path / "etc" / "virtual"
        source.write_text("a@example.com b@example.com\n")
        past = time.time() - 60
        os.utime(source, (past, past))
        (tmp_path / "etc" / "virtual.db").write_bytes(b"")
        assert problems(cfg) == []

    def test_a_named_table_that_was_never_built(self, tmp_path):
        cfg = make_config(tmp_path, f"transport_maps = hash:{tmp_path}/etc/transport\n")
        (tmp_path / "etc" / "transport").write_text("example.com smtp:[relay]\n")
        assert f"database {tmp_path}/etc/transport.db does not exist" in problems(cfg)

    def test_an_lmdb_database_older_than_its_source(self, tmp_path):
        cfg = make_config(tmp_path, f"virtual_alias_maps = lmdb:{tmp_path}/etc/virtual\n")
        source = tmp_path / "etc" / "virtual"
        source.write_text("a@example.com b@example.com\n")
        db = tmp_path / "etc" / "virtual.lmdb"
        db.write_bytes(b"")
        past = time.time() - 60
        os.utime(db, (past, past))
        assert problems(cfg) == [f"database {db} is older than source file {source}"]

    def test_a_table_type_pymaster_does_not_support_is_named(self, tmp_path):
        cfg = make_config(tmp_path, "virtual_alias_maps = nis:mail.aliases\n"
                                    "smtpd_recipient_restrictions = check_recipient_access "
                                    "sdbm:/etc/postfix/l, permit_mynetworks, "
                                    "reject_unauth_destination\n"
                                    "smtpd_sasl_path = inet:127.0.0.1:12345\n")
        found = problems(cfg)
        main_cf = f"{cfg.config_dir}/main.cf"
        assert f"{main_cf}: virtual_alias_maps: unsupported dictionary type: nis " \
               "(nis:mail.aliases)" in found
        assert f"{main_cf}: smtpd_recipient_restrictions: unsupported dictionary type: sdbm " \
               "(sdbm:/etc/postfix/l)" in found
        assert not [p for p in found if "inet" in p]

    def test_database_tables_are_supported(self, tmp_path):
        cfg = make_config(tmp_path, "virtual_alias_maps = mysql:/etc/postfix/x.cf, "
                                    "proxy:pgsql:/etc/postfix/p.cf, ldap:/etc/postfix/l.cf\n")
        assert not [p for p in problems(cfg) if "dictionary type" in p or "package" in p]

    def test_a_missing_driver_is_named(self, tmp_path, monkeypatch):
        from pymaster.util.tables.mysql import MysqlTable
        monkeypatch.setattr(MysqlTable, "driver", "no_such_driver_module")
        cfg = make_config(tmp_path, "virtual_alias_maps = proxy:mysql:/etc/postfix/x.cf\n")
        main_cf = f"{cfg.config_dir}/main.cf"
        assert f"{main_cf}: virtual_alias_maps: mysql: tables need the Python package " \
               "PyMySQL, which is not installed" in problems(cfg)


class TestQueue:
    def test_a_missing_queue_directory(self, tmp_path):
        cfg = make_config(tmp_path)
        os.rmdir(tmp_path / "spool" / "hold")
        assert f"missing queue directory: {tmp_path}/spool/hold" in problems(cfg)

    def test_set_permissions_repairs_the_layout(self, tmp_path):
        cfg = make_config(tmp_path)
        os.rmdir(tmp_path / "spool" / "hold")
        check.set_permissions(cfg)
        assert problems(cfg) == []


@needs_root
@pytest.mark.skipif(not have_accounts(), reason="needs the postfix user and postdrop group")
class TestPermissions:
    def test_a_config_file_not_owned_by_root(self, tmp_path):
        cfg = make_config(tmp_path)
        main_cf = tmp_path / "etc" / "main.cf"
        os.chown(main_cf, pwd.getpwnam("nobody").pw_uid, -1)
        assert f"not owned by root: {main_cf}" in problems(cfg)

    def test_a_group_writable_config_file(self, tmp_path):
        cfg = make_config(tmp_path)
        master_cf = tmp_path / "etc" / "master.cf"
        os.chmod(master_cf, 0o664)
        assert f"group or other writable: {master_cf}" in problems(cfg)

    def test_a_world_writable_maildrop(self, tmp_path):
        cfg = make_config(tmp_path)
        maildrop = tmp_path / "spool" / "maildrop"
        os.chmod(maildrop, 0o1733)
        assert f"wrong mode 1733 (expected 0730): {maildrop}" in problems(cfg)

    def test_public_and_private_modes(self, tmp_path):
        cfg = make_config(tmp_path)
        os.chmod(tmp_path / "spool" / "public", 0o755)
        os.chmod(tmp_path / "spool" / "private", 0o750)
        found = problems(cfg)
        assert f"wrong mode 0755 (expected 0710): {tmp_path}/spool/public" in found
        assert f"wrong mode 0750 (expected 0700): {tmp_path}/spool/private" in found

    def test_maildrop_not_of_the_setgid_group(self, tmp_path):
        cfg = make_config(tmp_path)
        maildrop = tmp_path / "spool" / "maildrop"
        os.chown(maildrop, -1, 0)
        assert f"not owned by group postdrop: {maildrop}" in problems(cfg)

    def test_a_queue_file_not_owned_by_mail_owner(self, tmp_path):
        cfg = make_config(tmp_path)
        stray = tmp_path / "spool" / "deferred" / "ABCDEF"
        stray.write_text("")
        assert f"not owned by postfix: {stray}" in problems(cfg)
        check.set_permissions(cfg)
        assert problems(cfg) == []

    def test_a_queue_directory_not_owned_by_root(self, tmp_path):
        cfg = make_config(tmp_path)
        os.chown(tmp_path / "spool" / "pid", pwd.getpwnam("postfix").pw_uid, -1)
        assert f"not owned by root: {tmp_path}/spool/pid" in problems(cfg)

    def test_postdrop_without_its_set_group_id_bit(self, tmp_path):
        commands = tmp_path / "sbin"
        commands.mkdir()
        postdrop = commands / "postdrop"
        postdrop.write_bytes(b"\x7fELF\x02\x01")
        os.chmod(postdrop, 0o755)
        cfg = make_config(tmp_path, f"command_directory = {commands}\n")
        # set-permissions (in make_config) gave it root:postdrop 2755.
        assert oct(os.stat(postdrop).st_mode & 0o7777) == "0o2755"
        os.chmod(postdrop, 0o755)
        assert "not set-gid or not owner+group+world executable: " \
               f"{postdrop}" in problems(cfg)
