"""`postfix check`, `postfix set-permissions` and `postfix start` against a real
instance's configuration: what an administrator sees for each planted fault.
"""

from __future__ import annotations

import os
import re
import smtplib
import time
from pathlib import Path

import pytest

from tests.support.instance import Instance, is_root


def instance(tmp_path, **main_cf) -> Instance:
    inst = Instance(tmp_path, main_cf=main_cf, start=False)
    assert inst.postfix("set-permissions").returncode == 0
    return inst


def check_warnings(inst: Instance) -> list[str]:
    done = inst.postfix("check")
    assert done.returncode == 0, done.stderr.decode()
    return [line for line in done.stderr.decode().splitlines() if "warning:" in line]


class TestCheck:
    def test_the_shipped_configuration_names_only_missing_programs(self, tmp_path):
        inst = instance(tmp_path)
        inst.command("postalias", f"hash:{inst.config_dir}/aliases")
        for line in check_warnings(inst):
            assert line.startswith("postfix/postfix-script: warning: ")
            assert "not found or not executable (master.cf service" in line

    def test_a_misspelt_parameter(self, tmp_path):
        inst = instance(tmp_path, virtual_alias_mpas="hash:/etc/postfix/virtual")
        assert (f"postfix/postfix-script: warning: {inst.config_dir}/main.cf: unused "
                "parameter: virtual_alias_mpas=hash:/etc/postfix/virtual") in check_warnings(inst)

    def test_a_stale_table(self, tmp_path):
        inst = instance(tmp_path)
        aliases = inst.config_dir / "aliases"
        assert inst.command("postalias", f"hash:{aliases}").returncode == 0
        past = time.time() - 120
        os.utime(f"{aliases}.db", (past, past))
        assert (f"postfix/postfix-script: warning: database {aliases}.db is older than "
                f"source file {aliases}") in check_warnings(inst)

    @pytest.mark.skipif(not is_root(), reason="owners and modes are checked as root")
    def test_permission_faults_and_their_repair(self, tmp_path):
        inst = instance(tmp_path)
        maildrop = inst.queue_dir / "maildrop"
        os.chmod(maildrop, 0o777)
        os.chmod(inst.config_dir / "main.cf", 0o666)
        warnings = check_warnings(inst)
        assert f"postfix/postfix-script: warning: wrong mode 0777 (expected 0730): " \
               f"{maildrop}" in warnings
        assert "postfix/postfix-script: warning: group or other writable: " \
               f"{inst.config_dir}/main.cf" in warnings
        assert inst.postfix("set-permissions").returncode == 0
        assert not any("maildrop" in w for w in check_warnings(inst))

    def test_a_bad_master_cf_is_fatal_with_file_and_line(self, tmp_path):
        inst = Instance(tmp_path, start=False, master_cf_extra="oops unix - -\n")
        for command in ("check", "start"):
            done = inst.postfix(command)
            assert done.returncode == 1
            assert f"{inst.config_dir}/master.cf: line" in done.stderr.decode()
            assert "bad field count" in done.stderr.decode()
        assert inst.master_pid() is None


# -- drop-in: Debian's configuration files, edited as administrators do -------------

DEBIAN = Path(__file__).resolve().parents[1] / "data" / "debian"
ADMIN_EDITS = """
myhostname = mx.example.com
mydomain = example.com
myorigin = $mydomain
mydestination = $myhostname, localhost.$mydomain, localhost, $mydomain
mynetworks = 127.0.0.0/8 [::1]/128 192.0.2.0/24
alias_maps = hash:$config_directory/aliases
alias_database = hash:$config_directory/aliases
canonical_maps = hash:$config_directory/canonical
relocated_maps = hash:$config_directory/relocated
transport_maps = hash:$config_directory/transport
virtual_alias_maps = hash:$config_directory/virtual
smtpd_helo_required = yes
smtpd_recipient_restrictions = permit_mynetworks, permit_sasl_authenticated,
    reject_unauth_destination, reject_unknown_recipient_domain,
    reject_rbl_client zen.spamhaus.org
smtpd_sasl_type = dovecot
smtpd_sasl_path = private/auth
smtpd_sasl_auth_enable = no
smtpd_tls_cert_file = /etc/ssl/certs/ssl-cert-snakeoil.pem
smtpd_tls_key_file = /etc/ssl/private/ssl-cert-snakeoil.key
smtpd_tls_security_level = may
smtp_tls_CApath = /etc/ssl/certs
smtp_tls_security_level = may
smtp_tls_session_cache_database = btree:${data_directory}/smtp_scache
"""
TABLES = {"canonical": "", "relocated": "", "transport": "", "virtual": "",
          "aliases": "postmaster: root\n"}


def debian_instance(tmp_path: Path) -> Instance:
    inst = Instance(tmp_path, start=False)
    settings = (inst.config_dir / "main.cf").read_text().split("# test settings", 1)[1]
    (inst.config_dir / "main.cf").write_text(
        (DEBIAN / "main.cf").read_text() + ADMIN_EDITS + settings
        + f"data_directory = {tmp_path}/data\n"
        + f"daemon_directory = {Path(__file__).resolve().parents[2] / 'libexec'}\n")
    master = (DEBIAN / "master.cf").read_text()
    master = re.sub(r"(?m)^smtp(\s+)inet", f"127.0.0.1:{inst.smtp_port}\\1inet", master)
    (inst.config_dir / "master.cf").write_text(master)
    for name, text in TABLES.items():
        (inst.config_dir / name).write_text(text)
        tool = "postalias" if name == "aliases" else "postmap"
        assert inst.command(tool, f"hash:{inst.config_dir}/{name}").returncode == 0
    return inst


class TestDebianDropIn:
    def test_check_names_only_what_pymaster_does_not_provide(self, tmp_path):
        inst = debian_instance(tmp_path)
        assert inst.postfix("set-permissions").returncode == 0
        for line in check_warnings(inst):
            assert ("not found or not executable (master.cf service" in line
                    or "parameter not implemented by pymaster, ignored: " in line), line

    def test_it_starts_and_answers(self, tmp_path):
        inst = debian_instance(tmp_path)
        with inst.start():
            with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=30) as smtp:
                code, banner = smtp.ehlo("client.example.com")
                assert code == 250
        assert not re.search(r"(fatal|panic):", inst.log_text()), inst.log_text()
