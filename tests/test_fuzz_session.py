"""Property-based fuzzing of whole SMTP sessions, in process.

A Session reads a hypothesis-made client stream (command lines built from
every verb and the argument fragments each one parses, random bytes, NULs,
bare CR and LF, overlong lines, DATA and BDAT content) from a Connection fed
directly, with cleanup stood in for (tests/test_smtpd_session.py's
StandInCleanup), and must end on its own: the stream's end, QUIT, a 421, or
the hard error limit. Every exception is caught inside Session.run (the
smtpd process would log "session failed" for one that escaped), every
input line gets a reply, and the replies are well-formed SMTP.

tests/e2e/test_fuzz_smtpd.py does the same with random bytes against the
real master's smtpd.
"""

from __future__ import annotations

import asyncio
import re
import socket

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from pymaster.mail.config import load_config
from pymaster.util import log
from services.smtpd.check import Checker
from services.smtpd.connection import Connection
from services.smtpd.peer import Peer
from services.smtpd.session import Session, Settings
from tests.fuzzing import fuzz_settings
from tests.test_fuzz_parsers import PATH_FRAGMENTS
from tests.test_smtpd_session import StandInCleanup

VERBS = ["HELO", "EHLO", "MAIL FROM:", "RCPT TO:", "DATA", "BDAT", "RSET", "NOOP", "VRFY",
         "ETRN", "QUIT", "STARTTLS", "AUTH", "XCLIENT", "XFORWARD", "EXPN", "TURN", "HELP",
         "mail from:", "ehlo", "", " ", "\x00", "GET / HTTP/1.0"]
ARG_FRAGMENTS = PATH_FRAGMENTS + [
    "PLAIN", "LOGIN", "CRAM-MD5", "=", "*", "AGFsaWNlAHNlY3JldA==", "!!!", "LAST", "0", "10",
    "99999999999999999999", "-1", "NAME=x", "ADDR=127.0.0.2", "ADDR=[::1]", "PORT=25",
    "PORT=x", "HELO=h", "PROTO=ESMTP", "LOGIN=u", "IDENT=i", "[UNAVAILABLE]", "example.com",
    "@example.com", "#x", "\x00", "\r", "\xff", "\u00e9"]
CONTROL_BYTES = [b"\r\n", b"\n", b"\r", b"\x00", b"\xff\xfe", b".\r\n", b"\r\n.\r\n",
                 b"\r\n.\n", b"..", b"x" * 1100, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"]


@st.composite
def command_lines(draw) -> bytes:
    """command_lines - one verb and argument fragments, or bytes, with a line end."""
    kind = draw(st.sampled_from(["command", "command", "command", "bytes", "control"]))
    if kind == "bytes":
        return draw(st.binary(max_size=40))
    if kind == "control":
        return draw(st.sampled_from(CONTROL_BYTES))
    verb = draw(st.sampled_from(VERBS))
    args = draw(st.lists(st.one_of(st.sampled_from(ARG_FRAGMENTS), st.text(max_size=8)),
                         max_size=5))
    line = (verb + ("" if verb.endswith(":") else " ") + "".join(args)).encode(
        "utf-8", "surrogateescape")
    end = draw(st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b""]))
    return line + end


streams = st.lists(command_lines(), min_size=1, max_size=30).map(b"".join)


class FakeTransport:
    """What the session's Connection writes to: replies collected, no socket."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.closing = False

    def write(self, data: bytes) -> None:
        self.out += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name, default=None):
        return default


@pytest.fixture(scope="module")
def session_parts(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz-session")
    values = {"myhostname": "mx.example.com", "mydestination": "$myhostname, localhost",
              "local_recipient_maps": "inline:{ alice=x, bob=x }", "alias_maps": "",
              "smtpd_error_sleep_time": "0",
              "smtpd_timeout": "5s", "smtpd_hard_error_limit": "1000",
              # The streams pipeline by design; the hang-up for that has its own tests.
              "smtpd_forbid_unauth_pipelining": "no",
              "smtpd_authorized_xclient_hosts": "127.0.0.0/8",
              "smtpd_authorized_xforward_hosts": "127.0.0.0/8",
              "smtpd_sasl_auth_enable": "yes", "smtpd_sasl_db": str(tmp / "sasldb"),
              "smtpd_recipient_restrictions": "permit_mynetworks, reject_unauth_destination"}
    (tmp / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in values.items()))
    cfg = load_config(str(tmp))
    # No log file: a module-wide one would outlive the per-test logging state.
    log.setup("smtpd")
    return Settings.from_config(cfg), Checker(cfg)


def run_session(parts, stream: bytes, hard_error_limit: int | None = None) -> bytes:
    """run_session - the replies to STREAM (then end of input) as one byte string."""
    settings, checker = parts
    if hard_error_limit is not None:
        settings = Settings(**{**vars(settings), "hard_error_limit": hard_error_limit})

    async def go() -> bytes:
        conn = Connection()
        transport = FakeTransport()
        conn.connection_made(transport)
        conn.data_received(stream)
        conn.eof_received()
        session = Session(conn, Peer("localhost", "127.0.0.1", 4711), settings, checker,
                          StandInCleanup())
        await asyncio.wait_for(session.run(), 60)
        return bytes(transport.out)
    return asyncio.run(go())


REPLY_LINE = re.compile(rb"[2-5]\d\d[ -].*|[2-5]\d\d|3\d\d .*|334 ?.*")


def check_replies(out: bytes) -> list[bytes]:
    assert out.startswith(b"220 "), out[:200]
    assert out.endswith(b"\r\n"), out[-200:]
    lines = out[:-2].split(b"\r\n")
    for line in lines:
        assert REPLY_LINE.fullmatch(line), line
    return lines


@fuzz_settings(300)
@given(stream=streams)
@example(stream=b"HELO \r\x00HELO \r\n")  # white space alone after HELO crashed the session
@example(stream=b"EHLO x\r\nMAIL FROM:<a@b> BODY=\r\nRCPT TO:<alice@localhost>\r\nDATA\r\nx\r\n")
@example(stream=b"EHLO x\r\nAUTH PLAIN\r\n*\r\nAUTH LOGIN\r\n\r\n")
@example(stream=b"EHLO x\r\nXCLIENT ADDR=[::1] PORT=x\r\nBDAT 99999999999999999999 LAST\r\n")
def test_every_stream_gets_replies_and_ends(session_parts, stream):
    check_replies(run_session(session_parts, stream))


@fuzz_settings(100)
@given(lines=st.lists(st.sampled_from([b"NOOP", b"RSET", b"HELO x", b"EHLO x", b"FOO",
                                        b"MAIL FROM:<a@b>", b"RCPT TO:<>", b"\x00 x"]),
                      min_size=1, max_size=12))
def test_each_complete_command_line_gets_a_reply(session_parts, lines):
    """Without DATA or BDAT every CRLF-ended line is one command: one final reply each."""
    out = run_session(session_parts, b"".join(line + b"\r\n" for line in lines))
    finals = [r for r in check_replies(out)[1:] if re.fullmatch(rb"\d\d\d( .*)?", r)]
    assert len(finals) == len(lines)


@fuzz_settings(50)
@given(garbage=st.lists(st.binary(min_size=1, max_size=20), min_size=25, max_size=40))
def test_the_hard_error_limit_hangs_up(session_parts, garbage):
    stream = b"".join(b"X" + g.replace(b"\n", b"") + b"\r\n" for g in garbage)
    lines = check_replies(run_session(session_parts, stream, hard_error_limit=20))
    assert lines[-1].startswith(b"421 4.7.0 mx.example.com Error: too many errors")


# -- regressions the fuzzers found ----------------------------------------------------

def test_a_half_closed_client_still_gets_every_reply(tmp_path):
    """Found by tests/e2e/test_fuzz_smtpd.py (seed 112767096, session 1141:
    b"ETRN SIZE=9999999999 10\\r\\n\\r\\nQUIT\\r\\n", then shutdown(SHUT_WR)): asyncio
    closed the transport at end of input, so the replies to the commands still
    buffered were dropped. As Postfix, smtpd answers what it read, then ends.
    An error sleep makes the session slower than the client's end of input."""
    from tests.test_smtpd_session import Server
    server = Server(tmp_path, smtpd_soft_error_limit="0", smtpd_error_sleep_time="1s")
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            reader = sock.makefile("rb")
            assert reader.readline().startswith(b"220 ")
            sock.sendall(b"EHLO client.example\r\n")
            while not reader.readline().startswith(b"250 "):
                pass
            sock.sendall(b"RSET\r\nMAIL FROM:<a@example.com>\r\nFOO\r\nQUIT\r\n")
            sock.shutdown(socket.SHUT_WR)
            replies = reader.read()
    finally:
        server.close()
    assert replies.split(b"\r\n") == [b"250 2.0.0 Ok", b"250 2.1.0 Ok",
                                      b"502 5.5.2 Error: command not recognized",
                                      b"221 2.0.0 Bye", b""]
