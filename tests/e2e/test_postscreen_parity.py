"""postscreen side by side with Debian's postscreen 3.7: same dialogues, same
replies, same log lines.

Both systems get the same main.cf settings and the same two postscreen
listeners: one whose tests drop (the pregreet test, the access list), one
that enforces and runs the deep protocol tests. Each dialogue comes from
its own loopback address (127.0.0.x), the same on both sides, and plays
the same bytes with the same pauses; the replies must be identical and so
must postscreen's log lines for that client once ports and times are
masked. A pregreeting client that Postfix drops may see a reset after the
521 reply (Postfix does not read what the client sent), so replies are
compared up to the end of the connection, whatever ended it.
"""

from __future__ import annotations

import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.instance import Instance, free_port
from tests.support.parity import postfix
from tests.support.wait import wait_until

pytestmark = pytest.mark.skipif(bool(postfix.available()), reason=postfix.available() or "-")

SETTINGS = {
    "myhostname": "mx.example.com",
    "mydestination": "localhost",
    "local_recipient_maps": "",
    "alias_maps": "",
    "alias_database": "",
    "virtual_mailbox_domains": "",
    "virtual_mailbox_maps": "",
    "mynetworks": "127.0.0.1/32",
    "postscreen_access_list": "permit_mynetworks, cidr:$config_directory/ps_access",
    "postscreen_denylist_action": "drop",
    "postscreen_greet_wait": "1s",
    "postscreen_greet_action": "drop",
    "postscreen_cache_map": "btree:$data_directory/postscreen_cache",
}
ACCESS = "127.0.1.8/32 permit\n127.0.1.7/32 reject\n"
GREET = 1.4        # seconds: past postscreen_greet_wait
QUIET = 0.3        # seconds without input that end a reply


def listeners(smtp_port: int, deep_port: int) -> str:
    return (f"127.0.0.1:{smtp_port} inet n - n - 1 postscreen\n"
            "smtpd pass - - n - - smtpd\n"
            "dnsblog unix - - n - 0 dnsblog\n"
            f"127.0.0.1:{deep_port} inet n - n - 1 postscreen\n"
            "  -o postscreen_greet_action=enforce\n"
            "  -o postscreen_cache_map=btree:$data_directory/deep_cache\n"
            "  -o postscreen_pipelining_enable=yes -o postscreen_non_smtp_command_enable=yes\n"
            "  -o postscreen_bare_newline_enable=yes\n"
            "  -o postscreen_discard_ehlo_keywords=dsn,chunking\n")


def with_postscreen(master_cf: str, smtp_port: int, deep_port: int) -> str:
    """with_postscreen - the smtpd listener replaced by postscreen's services."""
    line = re.compile(rf"(?m)^127\.0\.0\.1:{smtp_port}\s+inet\s.*smtpd$")
    assert line.search(master_cf)
    return line.sub("", master_cf) + "\n" + listeners(smtp_port, deep_port)


@pytest.fixture(scope="module")
def systems(tmp_path_factory):
    ours = Instance(tmp_path_factory.mktemp("ours"), SETTINGS, start=False)
    theirs = postfix.DebianPostfix(tmp_path_factory.mktemp("theirs"), SETTINGS)
    for system in (ours, theirs):
        system.deep_port = free_port()
        (system.config_dir / "ps_access").write_text(ACCESS)
        path = system.config_dir / "master.cf"
        path.write_text(with_postscreen(path.read_text(), system.smtp_port, system.deep_port))
    with ours:
        ours.start()
        ours.wait_for_port(ours.deep_port)
        theirs.start()
        try:
            yield {"ours": ours, "theirs": theirs}
        finally:
            theirs.stop()


def read_quiet(sock: socket.socket) -> bytes:
    """read_quiet - what arrives until QUIET seconds pass without more (or the end)."""
    data = b""
    sock.settimeout(QUIET)
    while True:
        try:
            chunk = sock.recv(4096)
        except socket.timeout:
            return data
        except ConnectionResetError:
            return data + b"<reset>"
        if not chunk:
            return data + b"<closed>"
        data += chunk


def play(port: int, source: str, steps: list) -> list[bytes]:
    """play - STEPS (bytes sent, or seconds waited) from SOURCE; what came back."""
    got = []
    with socket.create_connection(("127.0.0.1", port), timeout=10,
                                  source_address=(source, 0)) as sock:
        for step in steps:
            if isinstance(step, (int, float)):
                time.sleep(step)
                got.append(read_quiet(sock))
                continue
            try:
                sock.sendall(step)
            except (BrokenPipeError, ConnectionResetError):
                got.append(b"<closed>")
                break
            got.append(read_quiet(sock))
            if got[-1].endswith((b"<closed>", b"<reset>")):
                break
    return [g.replace(b"<reset>", b"<closed>") for g in got]


def postscreen_lines(system, source: str, count: int) -> list[str]:
    """postscreen_lines - postscreen's log lines about SOURCE, masked, once
    COUNT of them are there (the last one, DISCONNECT or PASS, ends a session)."""
    pattern = re.compile(rf"postfix/postscreen\[\d+\]: (.*\[{re.escape(source)}\]:\d+.*)$", re.M)

    def lines():
        found = pattern.findall(system.log_text())
        return found if len(found) >= count else None
    found = wait_until(lines, 20, f"{count} postscreen lines for {source}")
    return [_mask(x) for x in found]


def _mask(line: str) -> str:
    line = re.sub(r"\]:\d+", "]:PORT", line)
    return re.sub(r" after [0-9.]+ from ", " after T from ", line)


EHLO = b"EHLO client.example\r\n"
MAIL = b"MAIL FROM:<a@client.example>\r\n"
RCPT = b"RCPT TO:<b@localhost>\r\n"
QUIT = b"QUIT\r\n"

# name -> (listener, last octet of 127.0.1.x, steps, how many log lines end it)
DIALOGUES = {
    "pregreet_drop": ("smtp", 10, [EHLO, 1.0], 3),
    "denylisted_drop": ("smtp", 7, [0.5], 3),
    "allowlisted": ("smtp", 8, [0.3, EHLO, QUIT], 2),
    "hangup_before_handshake": ("smtp", 11, [], 3),
    "pregreet_enforced": ("deep", 12, [EHLO, GREET, MAIL, RCPT, b"VRFY x\r\n",
                                       b"DATA\r\n", b"NOOP\r\n"], 5),
    "deep_tests_pass": ("deep", 13, [GREET, EHLO, MAIL, RCPT, b"NOOP\r\n", b"RSET\r\n",
                                     QUIT], 4),
    "pipelining": ("deep", 14, [GREET, EHLO + MAIL, RCPT, QUIT], 4),
    "non_smtp_command": ("deep", 15, [GREET, b"GET / HTTP/1.0\r\n"], 3),
    "bare_newline": ("deep", 16, [GREET, b"EHLO client.example\n", MAIL, QUIT], 3),
    "hangup_after_handshake": ("deep", 17, [GREET, EHLO], 3),
    "unknown_and_bad_commands": ("deep", 18, [GREET, b"HELO\r\n", b"FOO bar\r\n",
                                              b"AUTH PLAIN\r\n", b"ETRN x\r\n", RCPT,
                                              b"MAIL FROM:<a@b>\r\n", MAIL, QUIT], 2),
    "helo_and_vrfy": ("deep", 19, [GREET, b"HELO client.example\r\n", b"VRFY b\r\n", MAIL,
                                   RCPT, QUIT], 4),
    "command_count_limit": ("deep", 20, [GREET] + [b"NOOP\r\n"] * 22, 3),
}


@pytest.mark.parametrize("name", list(DIALOGUES))
def test_same_replies_and_log_lines(systems, name):
    listener, octet, steps, count = DIALOGUES[name]
    source = f"127.0.1.{octet}"

    def dialogue(system) -> tuple[list[bytes], list[str]]:
        port = system.smtp_port if listener == "smtp" else system.deep_port
        return play(port, source, steps), postscreen_lines(system, source, count)
    # Both sides at once: each dialogue's pauses are timed per connection.
    with ThreadPoolExecutor(len(systems)) as pool:
        futures = {side: pool.submit(dialogue, system) for side, system in systems.items()}
        results = {side: future.result() for side, future in futures.items()}
    for ours, theirs in zip(*(results[side][0] for side in ("ours", "theirs"))):
        assert ours == theirs
    assert results["ours"][0] == results["theirs"][0]
    assert results["ours"][1] == results["theirs"][1]
