"""postconf: every option, with Postfix's output shapes and exit codes.

The command runs in-process (main(argv)), so these tests are fast; one test
runs the installed .venv/bin/postconf to check the entry point."""

import shutil
import subprocess
from pathlib import Path

import pytest

from pymaster.commands.postconf import main

ROOT = Path(__file__).resolve().parents[1]
DEBIAN = Path(__file__).parent / "data" / "debian"

MAIN_CF = """\
# identity
myhostname = mx.example.com
mydestination = $myhostname,
    localhost
# user-defined: referenced below, so not "unused"
mua_client_restrictions = permit_sasl_authenticated, reject
foo = bar
"""

MASTER_CF = """\
smtp      inet  n       -       n       -       -       smtpd
submission inet n       -       n       -       -       smtpd
  -o syslog_name=postfix/submission
  -o smtpd_client_restrictions=$mua_client_restrictions
  -o smtpd_bogus=1
pickup    unix  n       -       n       60      1       pickup
local     unix  -       n       n       -       -       local
mypipe    unix  -       n       n       -       -       pipe
  flags=R user=nobody argv=/bin/cat
"""


@pytest.fixture
def confdir(tmp_path):
    (tmp_path / "main.cf").write_text(MAIN_CF)
    (tmp_path / "master.cf").write_text(MASTER_CF)
    return tmp_path


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


class TestShow:
    def test_named_parameters(self, confdir, capsys):
        code, out, err = run(capsys, "-c", str(confdir), "myhostname", "myorigin")
        assert code == 0
        assert out == "myhostname = mx.example.com\nmyorigin = $myhostname\n"

    def test_unknown_parameter_warns_and_exits_0(self, confdir, capsys):
        code, out, err = run(capsys, "-c", str(confdir), "nosuch")
        assert code == 0 and out == ""
        assert "postconf: warning: nosuch: unknown parameter\n" in err

    def test_unused_main_cf_parameter_is_flagged(self, confdir, capsys):
        _, _, err = run(capsys, "-c", str(confdir), "-n")
        assert f"postconf: warning: {confdir}/main.cf: unused parameter: foo=bar\n" in err
        assert f"postconf: warning: {confdir}/master.cf: unused parameter: smtpd_bogus=1\n" in err
        assert "mua_client_restrictions" not in err

    def test_n_lists_only_main_cf_settings_sorted(self, confdir, capsys):
        code, out, _ = run(capsys, "-c", str(confdir), "-n")
        assert code == 0
        assert out == (f"config_directory = {confdir}\n"
                       "mua_client_restrictions = permit_sasl_authenticated, reject\n"
                       "mydestination = $myhostname, localhost\n"
                       "myhostname = mx.example.com\n")

    def test_d_shows_defaults(self, confdir, capsys):
        _, out, _ = run(capsys, "-c", str(confdir), "-d", "myorigin", "mynetworks_style",
                        "message_size_limit", "mydestination", "relayhost")
        assert out == ("myorigin = $myhostname\nmynetworks_style = host\n"
                       "message_size_limit = 10240000\n"
                       "mydestination = $myhostname, localhost.$mydomain, localhost\n"
                       "relayhost =\n")

    def test_d_lists_every_parameter(self, confdir, capsys):
        _, out, _ = run(capsys, "-c", str(confdir), "-d")
        lines = out.splitlines()
        assert len(lines) >= 800
        assert lines == sorted(lines)
        assert "smtpd_recipient_limit = 1000" in lines

    def test_full_listing_includes_service_and_user_defined(self, confdir, capsys):
        _, out, _ = run(capsys, "-c", str(confdir))
        lines = out.splitlines()
        assert "mypipe_time_limit = $command_time_limit" in lines
        assert "local_delivery_slot_cost = $default_delivery_slot_cost" in lines
        assert "mua_client_restrictions = permit_sasl_authenticated, reject" in lines
        assert not any(line.startswith("foo =") for line in lines)
        assert not any(line.startswith("smtp_time_limit") for line in lines)

    def test_x_expands(self, confdir, capsys):
        _, out, _ = run(capsys, "-c", str(confdir), "-x", "myorigin", "mydomain")
        assert out == "myorigin = mx.example.com\nmydomain = example.com\n"

    def test_h_and_H(self, confdir, capsys):
        _, out, _ = run(capsys, "-c", str(confdir), "-h", "myhostname")
        assert out == "mx.example.com\n"
        _, out, _ = run(capsys, "-c", str(confdir), "-H", "myhostname")
        assert out == "myhostname\n"

    def test_o_overrides(self, confdir, capsys):
        _, out, _ = run(capsys, "-c", str(confdir), "-o", "myhostname=other.example", "-x",
                        "myorigin")
        assert out == "myorigin = other.example\n"

    def test_f_folds_long_lines(self, confdir, capsys):
        _, out, _ = run(capsys, "-c", str(confdir), "-df", "smtpd_relay_restrictions")
        assert out == ("smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated,"
                       "\n    defer_unauth_destination\n")

    def test_mail_config_environment(self, confdir, capsys, monkeypatch):
        monkeypatch.setenv("MAIL_CONFIG", str(confdir))
        _, out, _ = run(capsys, "-h", "myhostname")
        assert out == "mx.example.com\n"

    def test_missing_directory_is_fatal(self, tmp_path, capsys):
        code, _, err = run(capsys, "-c", str(tmp_path / "none"), "-n")
        assert code == 1
        assert err == f"postconf: fatal: open {tmp_path}/none/main.cf: No such file or directory\n"

    def test_bad_main_cf_line_is_fatal_with_file_and_line(self, confdir, capsys):
        (confdir / "main.cf").write_text("a = 1\nthis is wrong\n")
        code, _, err = run(capsys, "-c", str(confdir), "-n")
        assert code == 1
        assert err == (f"postconf: fatal: {confdir}/main.cf, line 2: missing '=' after "
                       "attribute name: \"this is wrong\"\n")

    def test_bad_option_prints_usage_and_exits_1(self, capsys):
        code, _, err = run(capsys, "-Z")
        assert code == 1
        assert "postconf: invalid option -- 'Z'" in err and "postconf: fatal: usage:" in err


class TestEditMainCf:
    def test_e_replaces_in_place_and_appends_new(self, confdir, capsys):
        code, _, _ = run(capsys, "-c", str(confdir), "-e", "mydestination=localhost",
                         "relayhost = [smtp.example.com]", "empty=")
        assert code == 0
        text = (confdir / "main.cf").read_text()
        assert text == MAIN_CF.replace("mydestination = $myhostname,\n    localhost\n",
                                       "mydestination = localhost\n") + \
            "relayhost = [smtp.example.com]\nempty = \n"

    def test_e_replaces_every_duplicate_and_warns(self, confdir, capsys):
        (confdir / "main.cf").write_text("a = 1\nb = 2\na = 3\n")
        _, _, err = run(capsys, "-c", str(confdir), "-e", "a=9")
        assert (confdir / "main.cf").read_text() == "a = 9\nb = 2\na = 9\n"
        assert f'postconf: warning: {confdir}/main.cf: multiple entries for "a"' in err

    def test_e_keeps_the_file_mode(self, confdir, capsys):
        (confdir / "main.cf").chmod(0o640)
        run(capsys, "-c", str(confdir), "-e", "a=1")
        assert (confdir / "main.cf").stat().st_mode & 0o777 == 0o640

    def test_e_without_equals_is_fatal(self, confdir, capsys):
        code, _, err = run(capsys, "-c", str(confdir), "-e", "oops")
        assert code == 1
        assert err == "postconf: fatal: missing '=' after attribute name: \"oops\"\n"
        assert (confdir / "main.cf").read_text() == MAIN_CF

    def test_X_removes(self, confdir, capsys):
        run(capsys, "-c", str(confdir), "-X", "mydestination", "foo")
        assert (confdir / "main.cf").read_text() == (
            "# identity\nmyhostname = mx.example.com\n"
            "# user-defined: referenced below, so not \"unused\"\n"
            "mua_client_restrictions = permit_sasl_authenticated, reject\n")

    def test_hash_comments_out(self, confdir, capsys):
        run(capsys, "-c", str(confdir), "-#", "mydestination")
        assert "#mydestination = $myhostname,\n#    localhost\n" in (confdir / "main.cf").read_text()

    def test_e_then_n_round_trip(self, confdir, capsys):
        run(capsys, "-c", str(confdir), "-e", "message_size_limit=0")
        _, out, _ = run(capsys, "-c", str(confdir), "-h", "message_size_limit")
        assert out == "0\n"


class TestMaster:
    def test_M_prints_entries_in_columns(self, confdir, capsys):
        code, out, _ = run(capsys, "-c", str(confdir), "-M")
        assert code == 0
        lines = out.splitlines()
        assert lines[0] == "smtp       inet  n       -       n       -       -       smtpd"
        assert lines[1] == ("submission inet  n       -       n       -       -       smtpd "
                            "-o syslog_name=postfix/submission "
                            "-o smtpd_client_restrictions=$mua_client_restrictions "
                            "-o smtpd_bogus=1")

    def test_M_selects_service_or_service_type(self, confdir, capsys):
        _, out, _ = run(capsys, "-c", str(confdir), "-M", "pickup/unix", "smtp")
        assert [line.split()[0] for line in out.splitlines()] == ["smtp", "pickup"]

    def test_M_unmatched_request_warns(self, confdir, capsys):
        code, out, err = run(capsys, "-c", str(confdir), "-M", "nosuch/inet")
        assert code == 0 and out == ""
        assert 'postconf: warning: unmatched request: "nosuch/inet"' in err

    def test_Mf_folds_options_onto_their_own_lines(self, confdir, capsys):
        _, out, _ = run(capsys, "-c", str(confdir), "-Mf", "submission")
        assert out == ("submission inet  n       -       n       -       -       smtpd\n"
                       "    -o syslog_name=postfix/submission\n"
                       "    -o smtpd_client_restrictions=$mua_client_restrictions\n"
                       "    -o smtpd_bogus=1\n")

    def test_M_with_n_is_fatal(self, confdir, capsys):
        code, _, err = run(capsys, "-c", str(confdir), "-M", "-n")
        assert code == 1 and err == "postconf: fatal: with option -M, do not specify -n\n"

    def test_Me_replaces_and_adds(self, confdir, capsys):
        run(capsys, "-c", str(confdir), "-Me", "pickup/unix=pickup unix n - n 30 1 pickup",
            "discard/unix=discard unix - - n - - discard")
        entries = (confdir / "master.cf").read_text()
        assert "pickup     unix  n       -       n       30      1       pickup\n" in entries
        assert entries.endswith("discard    unix  -       -       n       -       -       discard\n")
        assert "60" not in entries

    def test_Me_bad_entry_is_fatal(self, confdir, capsys):
        code, _, err = run(capsys, "-c", str(confdir), "-Me", "x/unix=x unix -")
        assert code == 1 and err == 'postconf: fatal: bad field count: "x/unix=x unix -"\n'

    def test_MX_removes_a_whole_entry(self, confdir, capsys):
        run(capsys, "-c", str(confdir), "-MX", "submission/inet")
        text = (confdir / "master.cf").read_text()
        assert "submission" not in text and "-o" not in text and "pickup" in text

    def test_M_hash_comments_out(self, confdir, capsys):
        run(capsys, "-c", str(confdir), "-M#", "mypipe/unix")
        assert "#mypipe    unix" in (confdir / "master.cf").read_text()
        assert "#  flags=R" in (confdir / "master.cf").read_text()

    def test_F_shows_fields(self, confdir, capsys):
        _, out, _ = run(capsys, "-c", str(confdir), "-F", "pickup/unix")
        assert out == ("pickup/unix/service = pickup\npickup/unix/type = unix\n"
                       "pickup/unix/private = n\npickup/unix/unprivileged = -\n"
                       "pickup/unix/chroot = n\npickup/unix/wakeup = 60\n"
                       "pickup/unix/process_limit = 1\npickup/unix/command = pickup\n")
        _, out, _ = run(capsys, "-c", str(confdir), "-F", "mypipe/unix/command")
        assert out == "mypipe/unix/command = pipe flags=R user=nobody argv=/bin/cat\n"

    def test_Fe_edits_a_field(self, confdir, capsys):
        run(capsys, "-c", str(confdir), "-Fe", "smtp/inet/process_limit=5")
        _, out, _ = run(capsys, "-c", str(confdir), "-M", "smtp/inet")
        assert out == "smtp       inet  n       -       n       -       5       smtpd\n"

    def test_P_shows_and_edits_service_parameters(self, confdir, capsys):
        _, out, _ = run(capsys, "-c", str(confdir), "-P", "submission/inet/syslog_name")
        assert out == "submission/inet/syslog_name = postfix/submission\n"
        run(capsys, "-c", str(confdir), "-Pe", "smtp/inet/smtpd_tls_security_level=may")
        run(capsys, "-c", str(confdir), "-PX", "submission/inet/smtpd_bogus")
        _, out, _ = run(capsys, "-c", str(confdir), "-P")
        assert out == ("smtp/inet/smtpd_tls_security_level = may\n"
                       "submission/inet/syslog_name = postfix/submission\n"
                       "submission/inet/smtpd_client_restrictions = $mua_client_restrictions\n")


class TestListings:
    def test_m_lists_table_types(self, capsys):
        _, out, _ = run(capsys, "-m")
        assert {"hash", "regexp", "cidr", "static"} <= set(out.split())

    def test_l_lists_lock_types(self, capsys):
        _, out, _ = run(capsys, "-l")
        assert out.split() == ["flock", "fcntl", "dotlock"]


class TestDebianConfiguration:
    """Debian's default main.cf and master.cf read without error."""

    def test_n(self, capsys):
        code, out, err = run(capsys, "-c", str(DEBIAN), "-n")
        assert code == 0 and err == ""
        assert "smtpd_banner = $myhostname ESMTP $mail_name (Debian/GNU)" in out.splitlines()

    def test_M(self, capsys):
        code, out, err = run(capsys, "-c", str(DEBIAN), "-M")
        assert code == 0 and err == ""
        assert out.splitlines()[0] == "smtp       inet  n       -       y       -       -       smtpd"
        assert "postlog    unix-dgram n  -       n       -       1       postlogd" in out

    @pytest.mark.skipif(not Path("/usr/sbin/postconf").exists(), reason="Debian postfix missing")
    @pytest.mark.parametrize("option", ["-M", "-Mf", "-F", "-P"])
    def test_same_output_as_postfix(self, option, capsys):
        code, out, _ = run(capsys, "-c", str(DEBIAN), option)
        theirs = subprocess.run(["/usr/sbin/postconf", "-c", str(DEBIAN), option],
                                capture_output=True, text=True)
        assert out == theirs.stdout


def test_installed_command(confdir):
    done = subprocess.run([str(ROOT / ".venv" / "bin" / "postconf"), "-c", str(confdir),
                           "-h", "myhostname"], capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (0, "mx.example.com\n")


def test_the_shipped_main_cf(capsys):
    code, out, err = run(capsys, "-c", str(ROOT / "etc"), "-x", "queue_directory",
                         "virtual_mailbox_base")
    assert code == 0 and err == ""
    assert out == (f"queue_directory = {ROOT}/spool\n"
                   f"virtual_mailbox_base = {ROOT}/spool/mailboxes\n")


TEMPLATE_FILE = """\
# only the delay notice changes
delay_template = <<END
Subject: Still trying for $mydomain

Host $myhostname, $$5, ${myhostname} $(myhostname),
warned after $delay_warning_time_hours hour(s).
END
"""


class TestBounceTemplates:
    """-t prints bounce(5) templates as a template file; -b their expanded text."""

    def test_t_prints_the_built_in_templates_as_a_template_file(self, confdir, capsys):
        code, out, err = run(capsys, "-c", str(confdir), "-t")
        assert code == 0 and err == ""
        assert out.startswith("failure_template = <<EOF\nCharset: us-ascii\n"
                              "From: Mail Delivery System <MAILER-DAEMON>\n"
                              "Subject: Undelivered Mail Returned to Sender\n"
                              "Postmaster-Subject: Postmaster Copy: Undelivered Mail\n\n"
                              "This is the mail system at host $myhostname.\n")
        assert "\nEOF\n\ndelay_template = <<EOF\n" in out
        assert "\nEOF\n\nverify_template = <<EOF\n" in out
        assert out.endswith("                   The mail system\nEOF\n")

    def test_success_and_verify_have_no_postmaster_subject(self, confdir, capsys):
        out = run(capsys, "-c", str(confdir), "-t")[1]
        assert out.count("Postmaster-Subject:") == 2

    def test_b_expands_the_text_only(self, confdir, capsys):
        code, out, err = run(capsys, "-c", str(confdir), "-b")
        assert code == 0
        assert out.startswith("expanded_failure_text = <<EOF\n"
                              "This is the mail system at host mx.example.com.\n")
        assert "Subject:" not in out
        assert "more than 0 hour(s)" in out and "until it is 5 day(s) old" in out
        for kind in ("delay", "success", "verify"):
            assert f"\nEOF\n\nexpanded_{kind}_text = <<EOF\n" in out

    def test_a_template_file_overrides_one_template(self, confdir, capsys):
        (confdir / "bounce.cf").write_text(TEMPLATE_FILE)
        out = run(capsys, "-c", str(confdir), "-t", str(confdir / "bounce.cf"))[1]
        assert ("delay_template = <<EOF\nCharset: us-ascii\n"
                "From: Mail Delivery System <MAILER-DAEMON>\n"
                "Subject: Still trying for $mydomain\n"
                "Postmaster-Subject: Postmaster Warning: Delayed Mail\n\n"
                "Host $myhostname, $$5, ${myhostname} $(myhostname),\n") in out
        assert "Undelivered Mail Returned to Sender" in out

    def test_b_expands_a_template_file(self, confdir, capsys):
        (confdir / "bounce.cf").write_text(TEMPLATE_FILE)
        out = run(capsys, "-c", str(confdir), "-b", str(confdir / "bounce.cf"))[1]
        assert ("expanded_delay_text = <<EOF\nHost mx.example.com, $5, "
                "mx.example.com mx.example.com,\nwarned after 0 hour(s).\nEOF\n") in out

    def test_bounce_template_file_is_used_unless_an_empty_name_is_given(self, confdir, capsys):
        (confdir / "bounce.cf").write_text(TEMPLATE_FILE)
        with open(confdir / "main.cf", "a") as f:
            f.write(f"bounce_template_file = {confdir / 'bounce.cf'}\n")
        assert "Still trying" in run(capsys, "-c", str(confdir), "-t")[1]
        assert "Still trying" not in run(capsys, "-c", str(confdir), "-t", "")[1]

    def test_an_unknown_name_in_the_template_is_fatal(self, confdir, capsys):
        (confdir / "bad.cf").write_text("success_template = <<X\n\n$nosuch\nX\n")
        code, out, err = run(capsys, "-c", str(confdir), "-b", str(confdir / "bad.cf"))
        assert code == 1 and out == ""
        assert err.startswith(f"postconf: fatal: {confdir / 'bad.cf'}: ")
        assert "nosuch" in err

    def test_a_missing_or_malformed_file_is_fatal(self, confdir, capsys):
        code, _, err = run(capsys, "-c", str(confdir), "-t", "/nonexistent/t.cf")
        assert (code, err) == (1, "postconf: fatal: open /nonexistent/t.cf: "
                                  "No such file or directory\n")
        (confdir / "bad.cf").write_text("junk\n")
        code, _, err = run(capsys, "-c", str(confdir), "-t", str(confdir / "bad.cf"))
        assert code == 1 and f"{confdir / 'bad.cf'}, line 1" in err

    @pytest.mark.parametrize("args, message", [
        (["-b", "-t"], "specify one of -b and -t"),
        (["-b", "-n"], "with option -b, do not specify -n"),
        (["-t", "-d"], "with option -t, do not specify -d"),
        (["-b", "-M"], "specify one of -b -M"),
        (["-b", "-T", "run-version"], "specify one of -b -T"),
        (["-t", "a", "b"], "options -b and -t require at most one template file"),
    ])
    def test_bad_combinations(self, confdir, capsys, args, message):
        code, out, err = run(capsys, "-c", str(confdir), *args)
        assert (code, out, err) == (1, "", f"postconf: fatal: {message}\n")


class TestTls:
    def test_versions_are_openssl_version_strings(self, capsys):
        for mode in ("compile-version", "run-version"):
            code, out, err = run(capsys, "-T", mode)
            assert code == 0 and out.startswith("OpenSSL ") and out.count("\n") == 1

    def test_public_key_algorithms_one_per_line(self, capsys):
        code, out, _ = run(capsys, "-T", "public-key-algorithms")
        assert code == 0 and {"rsa", "ecdsa"} <= set(out.split())

    def test_an_unknown_mode_warns_and_exits_1(self, capsys):
        assert run(capsys, "-T", "bogus") == (
            1, "", "postconf: warning: unknown 'postconf -T' mode: bogus\n")
