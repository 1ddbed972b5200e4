"""pipe(8): master.cf attributes, argv macros, the flags' message format,
exit status meanings, and whole deliveries to a real command."""

from __future__ import annotations

import os
import shutil
import tempfile
import textwrap
from pathlib import Path

import pytest

from pymaster.mail import delivery
from services.pipe import (PipeAgent, PipeAttributes, PipeConfigError, CommandResult,
                           command_outcome, expand, expand_argv, format_message,
                           message_macros, parse_attributes, recipient_macros)
from pymaster.mail.records import Recipient
from pymaster.master.service import service_words
from tests.support.local_helpers import make_cfg, make_spool, queue_request

AS_ROOT = os.geteuid() == 0


@pytest.fixture
def cfg(tmp_path):
    return make_cfg(tmp_path, mail_owner="postfix", recipient_delimiter="+")


def attrs_of(text: str, cfg, as_root: bool = True) -> PipeAttributes:
    return parse_attributes(text.split(), cfg, as_root)


class TestMasterCfWords:
    def test_the_masters_options_go_the_commands_words_stay(self):
        argv = ["-n", "filter", "-t", "unix", "-u", "-o", "syslog_name=x",
                "flags=Rq", "user=nobody", "argv=/bin/filter", "-f", "${sender}",
                "--", "${recipient}", "-v", "-d"]
        assert service_words(argv) == ["flags=Rq", "user=nobody", "argv=/bin/filter", "-f",
                                       "${sender}", "--", "${recipient}", "-v", "-d"]

    def test_attributes(self, cfg):
        a = attrs_of(r"flags=FRX. size=1000 eol=\r\n directory=/tmp null_sender= "
                     r"user=nobody argv=/bin/cat -", cfg)
        assert a.argv == ["/bin/cat", "-"]
        assert (a.flags, a.size_limit, a.eol, a.directory, a.null_sender) == \
            ("FRX.", 1000, b"\r\n", "/tmp", "")
        assert a.user == "nobody" and a.uid == 65534

    def test_user_and_group(self, cfg):
        a = attrs_of("user=nobody:nogroup argv=/bin/true", cfg)
        assert (a.uid, a.gid) == (65534, 65534)

    def test_null_sender_defaults_to_mailer_daemon(self, cfg):
        assert attrs_of("user=nobody argv=/bin/true", cfg).null_sender == "MAILER-DAEMON"

    @pytest.mark.parametrize("words,error", [
        ("user=root argv=/bin/true", "user= command-line attribute specifies root privileges"),
        ("user=nobody:root argv=/bin/true",
         "user= command-line attribute specifies privileged group id 0"),
        ("user=postfix argv=/bin/true",
         "user= command-line attribute specifies mail system owner postfix"),
        ("flags=F argv=/bin/true", "missing user= command-line attribute"),
        ("user=nobody flags=F", "missing argv= command-line attribute"),
        ("user=nobody bogus=1 argv=/bin/true", "unknown attribute name: bogus=1"),
        ("user=no-such-user-here argv=/bin/true", "unknown user name: no-such-user-here"),
        ("user=nobody size=big argv=/bin/true", "size= command-line attribute: bad value: big"),
    ])
    def test_refused_entries(self, cfg, words, error):
        if "postfix" in words:
            pytest.importorskip("pwd").getpwnam("postfix")
        with pytest.raises(PipeConfigError) as e:
            attrs_of(words, cfg, as_root=True)
        assert str(e.value) == error

    def test_root_is_refused_even_when_not_running_as_root(self, cfg):
        with pytest.raises(PipeConfigError, match="root privileges"):
            attrs_of("user=root argv=/bin/true", cfg, as_root=False)

    def test_an_unknown_account_is_fine_when_not_root(self, cfg):
        a = attrs_of("user=autoresp-not-here argv=/bin/true", cfg, as_root=False)
        assert a.uid is None


class TestMacros:
    VALUES = {"sender": "a@x", "nexthop": "mx", "empty": ""}

    @pytest.mark.parametrize("text,result", [
        ("${sender}", "a@x"), ("$sender", "a@x"), ("$(sender)", "a@x"),
        ("-f$sender.", "-fa@x."), ("$$sender", "$sender"), ("${unknown}", ""),
        ("${nexthop?-h $nexthop}", "-h mx"), ("${empty?-h}", ""),
        ("${empty:none}", "none"), ("${sender:none}", "a@x"), ("cost$", "cost$"),
    ])
    def test_expansion(self, text, result):
        assert expand(text, self.VALUES) == result

    def test_a_recipient_word_becomes_one_argument_per_recipient(self):
        argv = ["/bin/prog", "-f", "${sender}", "--", "${recipient}", "to=${user}@${domain}"]
        common = {"sender": "a@x"}
        rcpts = [{"recipient": "b@y", "user": "b", "domain": "y"},
                 {"recipient": "c@z", "user": "c", "domain": "z"}]
        assert expand_argv(argv, common, rcpts) == [
            "/bin/prog", "-f", "a@x", "--", "b@y", "c@z", "to=b@y", "to=c@z"]

    def test_shell_metacharacters_stay_one_literal_argument(self, cfg):
        attrs = attrs_of("user=nobody argv=/bin/prog ${recipient}", cfg)
        rcpt = Recipient("x;rm -rf /@dom.example")
        argv = expand_argv(attrs.argv, {}, [recipient_macros(rcpt, attrs, "+")])
        assert argv == ["/bin/prog", "x;rm -rf /@dom.example"]

    def test_q_flag_quotes_local_parts_as_rfc_822_wants(self, cfg):
        attrs = attrs_of("flags=q user=nobody argv=/bin/prog", cfg)
        rcpt = Recipient("x;rm -rf /@dom.example")
        assert recipient_macros(rcpt, attrs, "+")["recipient"] == '"x;rm -rf /"@dom.example'

    def test_recipient_parts(self, cfg):
        attrs = attrs_of("flags=hu user=nobody argv=/bin/prog", cfg)
        rcpt = Recipient("Joe+Box@Example.COM", orig="Info@Example.COM")
        assert recipient_macros(rcpt, attrs, "+") == {
            "recipient": "joe+box@example.com", "original_recipient": "info@example.com",
            "domain": "example.com", "mailbox": "joe+box", "user": "joe",
            "extension": "box"}

    def test_without_flags_case_is_kept(self, cfg):
        attrs = attrs_of("user=nobody argv=/bin/prog", cfg)
        m = recipient_macros(Recipient("Joe@Example.COM"), attrs, "+")
        assert (m["recipient"], m["user"], m["extension"]) == ("Joe@Example.COM", "Joe", "")

    def test_message_macros(self, cfg):
        attrs = attrs_of("user=nobody argv=/bin/prog", cfg)
        req = delivery.DeliveryRequest(
            queue_id="4XABC", path="active/4XABC", transport="inforeply", nexthop="Ora.COM",
            sender="", recipients=[],
            attrs={"client_address": "192.0.2.1", "client_name": "c.example",
                   "helo_name": "helo.example", "client_port": "4000", "protocol": "ESMTP",
                   "sasl_method": "PLAIN", "sasl_username": "u"})
        m = message_macros(req, attrs, size=1234)
        assert m["sender"] == "MAILER-DAEMON" and m["nexthop"] == "Ora.COM"
        assert (m["queue_id"], m["size"]) == ("4XABC", "1234")
        assert (m["client_address"], m["client_hostname"], m["client_helo"],
                m["client_port"], m["client_protocol"]) == \
            ("192.0.2.1", "c.example", "helo.example", "4000", "ESMTP")
        assert (m["sasl_method"], m["sasl_username"]) == ("PLAIN", "u")


class TestMessageFormat:
    CONTENT = b"From: a@x\nSubject: s\n\nFrom here\n.dot\nend"
    RCPT = Recipient("Bob@Y.example", orig="info@y.example")

    def fmt(self, cfg, flags: str, eol: str = r"\n", sender: str = "a@x") -> bytes:
        attrs = attrs_of(f"flags={flags} eol={eol} user=nobody argv=/bin/cat", cfg)
        return format_message(self.CONTENT, sender, self.RCPT, attrs, when=0)

    def test_no_flags_passes_the_message_as_it_is(self, cfg):
        assert self.fmt(cfg, "") == self.CONTENT + b"\n"

    def test_envelope_lines(self, cfg):
        out = self.fmt(cfg, "FRDO")
        lines = out.split(b"\n")
        assert lines[0].startswith(b"From a@x  ")
        assert lines[1:4] == [b"Return-Path: <a@x>", b"Delivered-To: bob@y.example",
                              b"X-Original-To: info@y.example"]
        assert lines[4] == b"From: a@x"

    def test_null_sender_return_path(self, cfg):
        assert self.fmt(cfg, "R", sender="").startswith(b"Return-Path: <>\n")

    def test_from_quoting_dot_stuffing_and_blank_line(self, cfg):
        assert self.fmt(cfg, ">.B") == \
            b"From: a@x\nSubject: s\n\n>From here\n..dot\nend\n\n"

    def test_crlf_line_ends(self, cfg):
        assert self.fmt(cfg, "R", eol=r"\r\n") == \
            b"Return-Path: <a@x>\r\nFrom: a@x\r\nSubject: s\r\n\r\nFrom here\r\n.dot\r\nend\r\n"


class TestExitStatus:
    @pytest.mark.parametrize("status,output,kind,dsn,reason", [
        (0, "", "sent", "2.0.0", "delivered via inforeply service"),
        (75, "", "deferred", "4.3.0", "temporary failure"),
        (75, "try later", "deferred", "4.3.0", "temporary failure. Command output: try later"),
        (71, "", "deferred", "4.3.0", "system resource problem"),
        (67, "no such user", "bounced", "5.1.1", "user unknown. Command output: no such user"),
        (69, "", "bounced", "5.3.0", "service unavailable"),
        (68, "", "bounced", "5.1.2", "host name unknown"),
        (77, "", "bounced", "5.7.0", "permission denied"),
        (78, "", "bounced", "5.3.5", "local configuration error"),
        (1, "oops", "bounced", "5.3.0",
         'Command died with status 1: "/bin/prog". Command output: oops'),
        (1, "5.2.2 mailbox full", "bounced", "5.2.2", "mailbox full"),
        (1, "4.2.2 over quota for now", "deferred", "4.2.2", "over quota for now"),
        (-9, "", "deferred", "4.3.0", 'Command died with signal 9: "/bin/prog"'),
        (None, "", "bounced", "5.3.0", 'Command time limit exceeded: "/bin/prog"'),
    ])
    def test_meanings(self, status, output, kind, dsn, reason):
        o = command_outcome(CommandResult(status, output), "/bin/prog", "inforeply")
        assert (o.kind, o.dsn, o.reason) == (kind, dsn, reason)


# -- whole deliveries to a real program ----------------------------------------------

# A shell script, not Python: as root the program runs as nobody, who cannot
# reach the virtualenv's interpreter. Arguments are written NUL-separated.
RECORDER = textwrap.dedent("""\
    #!/bin/sh
    printf '%s\\0' "$@" > "$PIPE_TEST_OUT.argv"
    cat > "$PIPE_TEST_OUT.stdin"
    if [ "${PIPE_TEST_EXIT:-0}" != 0 ]; then echo said something >&2; fi
    exit "${PIPE_TEST_EXIT:-0}"
    """)


def recorded_argv(out) -> list[str]:
    return out.with_suffix(".argv").read_bytes().decode().split("\0")[:-1]


@pytest.fixture
def reachable(tmp_path):
    """reachable - a directory the program can reach when it runs as nobody.

    Not under pytest's base directory, which every pytest run makes 0700."""
    path = Path(tempfile.mkdtemp(prefix="pymaster-pipe-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def recorder(tmp_path, monkeypatch, reachable):
    make_spool(tmp_path, monkeypatch)
    prog = reachable / "recorder.sh"
    prog.write_text(RECORDER)
    prog.chmod(0o755)
    out = reachable / "out"
    out.mkdir()
    out.chmod(0o777)
    return prog, out / "run"


def agent_for(cfg, entry: str, extra_env: dict | None = None) -> PipeAgent:
    attrs = parse_attributes(entry.split(), cfg, AS_ROOT)
    env = {"PATH": "/usr/bin:/bin", **(extra_env or {})}
    return PipeAgent("inforeply", attrs, cfg, env=env)


def run_delivery(agent: PipeAgent, rcpts, sender="sender@example.com"):
    req = queue_request(sender, rcpts, transport="inforeply")
    status = delivery.Status(req, agent.cfg)
    agent.deliver(req, status)
    return req, status.results


class TestDelivery:
    def test_argv_and_input_reach_the_program(self, tmp_path, recorder):
        prog, out = recorder
        cfg = make_cfg(tmp_path, recipient_delimiter="+")
        agent = agent_for(cfg, f"flags=FR user=nobody argv={prog} -f ${{sender}} -- "
                               f"${{recipient}}", {"PIPE_TEST_OUT": str(out)})
        req, results = run_delivery(agent, [("x;rm -rf /@dom.example", ""),
                                            ("b@dom.example", "")])
        assert [r["status"] for r in results] == ["sent", "sent"]
        assert results[0]["reason"] == "delivered via inforeply service"
        argv = recorded_argv(out)
        assert argv == ["-f", "sender@example.com", "--", "x;rm -rf /@dom.example",
                        "b@dom.example"]
        data = out.with_suffix(".stdin").read_bytes()
        assert data.startswith(b"From sender@example.com  ")
        assert b"\nReturn-Path: <sender@example.com>\nFrom: a@example.com\n" in data

    def test_the_recipients_are_done_in_the_queue_file(self, tmp_path, recorder):
        prog, out = recorder
        cfg = make_cfg(tmp_path)
        agent = agent_for(cfg, f"user=nobody argv={prog}", {"PIPE_TEST_OUT": str(out)})
        req, _ = run_delivery(agent, [("a@dom.example", "")])
        assert delivery.done_offsets(req.path, [r.offset for r in req.recipients]) == \
            {req.recipients[0].offset}

    def test_a_failing_program_bounces_with_its_output(self, tmp_path, recorder):
        prog, out = recorder
        cfg = make_cfg(tmp_path)
        agent = agent_for(cfg, f"user=nobody argv={prog}",
                          {"PIPE_TEST_OUT": str(out), "PIPE_TEST_EXIT": "67"})
        _, results = run_delivery(agent, [("a@dom.example", "")])
        assert (results[0]["status"], results[0]["dsn"], results[0]["reason"]) == \
            ("bounced", "5.1.1", "user unknown. Command output: said something")

    def test_tempfail_defers(self, tmp_path, recorder):
        prog, out = recorder
        cfg = make_cfg(tmp_path)
        agent = agent_for(cfg, f"user=nobody argv={prog}",
                          {"PIPE_TEST_OUT": str(out), "PIPE_TEST_EXIT": "75"})
        _, results = run_delivery(agent, [("a@dom.example", "")])
        assert (results[0]["status"], results[0]["dsn"]) == ("deferred", "4.3.0")

    def test_a_missing_program_defers(self, tmp_path, monkeypatch):
        make_spool(tmp_path, monkeypatch)
        cfg = make_cfg(tmp_path)
        agent = agent_for(cfg, "user=nobody argv=/no/such/program")
        _, results = run_delivery(agent, [("a@dom.example", "")])
        assert results[0]["status"] == "deferred"
        assert results[0]["reason"] == ("temporary failure. Command output: pipe: fatal: "
                                         "pipe_command: execvp /no/such/program: "
                                         "No such file or directory")

    def test_time_limit(self, tmp_path, monkeypatch):
        make_spool(tmp_path, monkeypatch)
        cfg = make_cfg(tmp_path, inforeply_time_limit="1s")
        agent = agent_for(cfg, "user=nobody argv=/bin/sleep 30")
        _, results = run_delivery(agent, [("a@dom.example", "")])
        assert (results[0]["status"], results[0]["reason"]) == \
            ("bounced", 'Command time limit exceeded: "/bin/sleep"')

    def test_size_limit(self, tmp_path, recorder):
        prog, out = recorder
        cfg = make_cfg(tmp_path)
        agent = agent_for(cfg, f"size=10 user=nobody argv={prog}", {"PIPE_TEST_OUT": str(out)})
        _, results = run_delivery(agent, [("a@dom.example", "")])
        assert (results[0]["status"], results[0]["dsn"], results[0]["reason"]) == \
            ("bounced", "5.2.3", "message too large")
        assert not out.with_suffix(".argv").exists()

    def test_flag_d_needs_one_recipient_per_delivery(self, tmp_path, recorder):
        prog, out = recorder
        cfg = make_cfg(tmp_path)
        agent = agent_for(cfg, f"flags=D user=nobody argv={prog}", {"PIPE_TEST_OUT": str(out)})
        _, results = run_delivery(agent, [("a@dom.example", ""), ("b@dom.example", "")])
        assert {(r["status"], r["dsn"], r["reason"]) for r in results} == \
            {("deferred", "4.3.5", "mail system configuration error")}

    @pytest.mark.skipif(not AS_ROOT, reason="switching accounts needs root")
    def test_the_program_runs_as_the_user(self, tmp_path, monkeypatch, reachable):
        make_spool(tmp_path, monkeypatch)
        out = reachable / "ids"
        reachable.chmod(0o777)
        cfg = make_cfg(tmp_path)
        agent = agent_for(cfg, "user=nobody:nogroup argv=/bin/true")
        agent.attrs.argv = ["/bin/sh", "-c", f"id -u > {out}; id -g >> {out}"]
        _, results = run_delivery(agent, [("a@dom.example", "")])
        assert results[0]["status"] == "sent"
        assert out.read_text().split() == ["65534", "65534"]
