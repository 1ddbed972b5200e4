"""smtpd's before-queue filter client (services/smtpd/proxy.py).

The real session code on a loopback port (tests/test_smtpd_session.py's
Server, cleanup stood in for) relays to a tiny scripted SMTP filter in this
test, which records every line and every byte of content it gets and answers
as each test tells it. The filter program end to end, with the real master
and a re-injection smtpd, is tests/e2e/test_before_queue_filter.py.
"""

from __future__ import annotations

import socket
import threading

import pytest

from services.smtpd import proxy
from services.smtpd.proxy import ProxyError
from tests.support.wait import wait_until
from tests.test_smtpd_session import Server, _end_servers, hello  # noqa: F401


class TinyFilter:
    """A scripted SMTP server: REPLIES maps a verb to its answer (None: never answer)."""

    def __init__(self, xforward: bool = True, unix_path: str = "",
                 **replies: str | None) -> None:
        self.replies = {"EHLO": "250-filter.test\r\n250-PIPELINING\r\n" +
                        ("250-XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE\r\n"
                         if xforward else "") + "250 8BITMIME",
                        "MAIL": "250 2.1.0 filter: sender ok",
                        "RCPT": "250 2.1.5 filter: recipient ok",
                        "DATA": "354 filter: go ahead",
                        "END": "250 2.0.0 Ok: queued as DOWNSTREAM1",
                        "XFORWARD": "250 2.0.0 Ok"}
        self.replies.update(replies)
        self.lines: list[str] = []          # every command line, every connection
        self.content = bytearray()          # DATA bytes as they came, dot-stuffing and all
        self.connections = 0
        self.ended = threading.Event()      # a connection closed
        if unix_path:
            self.listener = socket.socket(socket.AF_UNIX)
            self.listener.bind(unix_path)
            self.port = 0
        else:
            self.listener = socket.socket()
            self.listener.bind(("127.0.0.1", 0))
            self.port = self.listener.getsockname()[1]
        self.listener.listen(5)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _answer(self, sock: socket.socket, key: str) -> None:
        text = self.replies.get(key, "250 2.0.0 Ok")
        if text is not None:
            sock.sendall(text.encode() + b"\r\n")

    def _serve(self, sock: socket.socket) -> None:
        f = sock.makefile("rb")
        sock.sendall(b"220 filter.test ESMTP\r\n")
        try:
            while line := f.readline():
                text = line.decode().rstrip("\r\n")
                self.lines.append(text)
                verb = text.split(" ", 1)[0].upper()
                if verb == "QUIT":
                    return
                self._answer(sock, verb)
                if verb == "DATA" and self.replies["DATA"].startswith("3"):
                    self._data(f)
                    self._answer(sock, "END")
        finally:
            sock.close()
            self.ended.set()

    def _data(self, f) -> None:
        while (line := f.readline()) not in (b".\r\n", b""):
            self.content += line
        if line:
            self.lines.append("DATA-END")

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def tiny():
    filters: list[TinyFilter] = []

    def make(**replies) -> TinyFilter:
        filters.append(TinyFilter(**replies))
        return filters[-1]
    yield make
    for f in filters:
        f.close()


def proxied(tmp_path, filt: TinyFilter, **settings) -> Server:
    return Server(tmp_path, smtpd_proxy_filter=f"127.0.0.1:{filt.port}",
                  smtpd_proxy_timeout="2s", **settings)


def transaction(raw, rcpts=("alice@mx.example.com",)) -> list[str]:
    hello(raw)
    return [raw.cmd("MAIL FROM:<sender@example.com>"),
            *(raw.cmd(f"RCPT TO:<{r}>") for r in rcpts)]


class TestPieces:
    @pytest.mark.parametrize("service, want", [
        ("127.0.0.1:10024", ("inet", "127.0.0.1", 10024)),
        ("inet:filter.example:25", ("inet", "filter.example", 25)),
        (":10024", ("inet", "localhost", 10024)),
        ("inet:[::1]:10024", ("inet", "::1", 10024)),
        ("unix:private/filter", ("unix", "private/filter", 0)),
    ])
    def test_service_syntax(self, service, want):
        assert proxy.parse_service(service) == want

    @pytest.mark.parametrize("service", ["127.0.0.1", "host:port", "host:0", "host:70000"])
    def test_bad_service(self, service):
        with pytest.raises(ProxyError):
            proxy.parse_service(service)

    def test_content_goes_out_crlf_and_dot_stuffed_across_pieces(self):
        out, start = proxy.to_wire(b".a\nb\n.", True)
        assert (out, start) == (b"..a\r\nb\r\n..", False)
        out, start = proxy.to_wire(b"c.\n.d\n", start)
        assert (out, start) == (b"c.\r\n..d\r\n", True)

    def test_xforward_names_only_what_the_filter_asked_for(self):
        values = {"NAME": "unknown.example", "ADDR": "192.0.2.1", "PORT": "4000",
                  "HELO": "odd helo=x+", "IDENT": "[UNAVAILABLE]", "PROTO": "ESMTP",
                  "SOURCE": "REMOTE"}
        assert proxy.xforward_commands("ADDR HELO IDENT", values) == \
            ["XFORWARD ADDR=192.0.2.1 HELO=odd+20helo+3Dx+2B IDENT=[UNAVAILABLE]"]
        assert proxy.xforward_commands("", values) == []

    def test_long_xforward_attributes_take_several_lines(self):
        values = dict.fromkeys(proxy.XFORWARD_ORDER, "x" * 200)
        lines = proxy.xforward_commands(" ".join(proxy.XFORWARD_ORDER), values)
        assert len(lines) == 4 and all(len(line) <= 510 for line in lines)
        assert " ".join(line[len("XFORWARD "):] for line in lines).split() == \
            [f"{name}={'x' * 200}" for name in proxy.XFORWARD_ORDER]

    def test_ehlo_keywords(self):
        assert proxy.ehlo_keywords("250-f.test\r\n250-xforward name addr\r\n250 8BITMIME") == \
            {"XFORWARD": "NAME ADDR", "8BITMIME": ""}


class TestTransaction:
    def test_filter_sees_the_transaction_and_its_replies_are_the_clients(self, tmp_path, tiny):
        filt = tiny()
        server = proxied(tmp_path, filt)
        raw = server.raw()
        assert transaction(raw) == ["250 2.1.0 Ok", "250 2.1.5 filter: recipient ok"]
        assert filt.lines[:2] == ["EHLO mx.example.com",
                                  "XFORWARD NAME=localhost ADDR=127.0.0.1 PORT="
                                  + filt.lines[1].split("PORT=")[1].split()[0] +
                                  " HELO=client.example IDENT=[UNAVAILABLE] PROTO=ESMTP"
                                  " SOURCE=LOCAL"]
        assert filt.lines[2:] == ["MAIL FROM:<sender@example.com>",
                                  "RCPT TO:<alice@mx.example.com>"]
        assert raw.cmd("DATA") == "354 End data with <CR><LF>.<CR><LF>"
        raw.send(b"Subject: streamed\r\n\r\n..dot line\r\n")
        # The filter has the content before the client has sent its end.
        wait_until(lambda: b"..dot line\r\n" in filt.content, 10, "streamed content")
        assert raw.cmd("last line\r\n.") == "250 2.0.0 Ok: queued as DOWNSTREAM1"
        assert raw.cmd("QUIT") == "221 2.0.0 Bye"
        filt.ended.wait(10)
        text = filt.content.decode()
        assert text.startswith("Received: from client.example (localhost [127.0.0.1])\r\n"
                               "\tby mx.example.com (Postfix) with ESMTP\r\n"
                               "\tfor <alice@mx.example.com>; ")
        assert text.endswith("\r\nSubject: streamed\r\n\r\n..dot line\r\nlast line\r\n")
        assert filt.lines[-2:] == ["DATA-END", "QUIT"]
        log = server.wait_log("disconnect from")
        assert "NOQUEUE: client=localhost[127.0.0.1]" in log
        assert "proxy-accept: END-OF-MESSAGE: 250 2.0.0 Ok: queued as DOWNSTREAM1; " \
               "from=<sender@example.com> to=<alice@mx.example.com> proto=ESMTP " \
               "helo=<client.example>" in log
        # smtpd itself queued nothing and reserved no queue file.
        assert server.cleanup.messages == [] and server.cleanup.reserved == []

    def test_smtpds_own_restrictions_come_first(self, tmp_path, tiny):
        filt = tiny()
        server = proxied(tmp_path, filt)
        raw = server.raw()
        replies = transaction(raw, ["nobody@mx.example.com", "bob@mx.example.com"])
        assert replies[1].startswith("550 5.1.1 <nobody@mx.example.com>")
        assert replies[2] == "250 2.1.5 filter: recipient ok"
        assert "RCPT TO:<nobody@mx.example.com>" not in filt.lines
        assert filt.connections == 1

    def test_filter_refusals_reach_the_client(self, tmp_path, tiny):
        filt = tiny(RCPT="550 5.1.1 filter: no such user", END="554 5.7.1 filter: spam")
        server = proxied(tmp_path, filt)
        raw = server.raw()
        assert transaction(raw)[1] == "550 5.1.1 filter: no such user"
        assert f'warning: proxy 127.0.0.1:{filt.port} rejected "RCPT TO:<alice@mx.example.com>": ' \
               f'"550 5.1.1 filter: no such user"' in server.wait_log("rejected")
        filt.replies["RCPT"] = "250 2.1.5 Ok"
        assert raw.cmd("RCPT TO:<bob@mx.example.com>") == "250 2.1.5 Ok"
        assert raw.cmd("DATA").startswith("354")
        assert raw.cmd("spam\r\n.") == "554 5.7.1 filter: spam"

    def test_filter_refusing_mail_answers_the_rcpt(self, tmp_path, tiny):
        filt = tiny(MAIL="553 5.7.1 filter: not that sender")
        raw = proxied(tmp_path, filt).raw()
        assert transaction(raw) == ["250 2.1.0 Ok", "553 5.7.1 filter: not that sender"]
        assert "RCPT TO:<alice@mx.example.com>" not in filt.lines
        filt.ended.wait(10)

    def test_filter_refusing_data(self, tmp_path, tiny):
        filt = tiny(DATA="451 4.3.0 filter: busy")
        raw = proxied(tmp_path, filt).raw()
        transaction(raw)
        assert raw.cmd("DATA") == "451 4.3.0 filter: busy"
        assert raw.cmd("NOOP") == "250 2.0.0 Ok"

    def test_rset_drops_the_filter_without_a_message(self, tmp_path, tiny):
        filt = tiny()
        raw = proxied(tmp_path, filt).raw()
        transaction(raw)
        assert raw.cmd("RSET") == "250 2.0.0 Ok"
        assert filt.ended.wait(10)
        assert "DATA" not in filt.lines

    def test_size_limit_while_streaming_leaves_the_filter_without_an_end(self, tmp_path, tiny):
        filt = tiny()
        raw = proxied(tmp_path, filt, message_size_limit="2000").raw()
        transaction(raw)
        raw.cmd("DATA")
        assert raw.cmd(("x" * 70 + "\r\n") * 40 + ".") == \
            "552 5.3.4 Message size exceeds fixed limit"
        assert filt.ended.wait(10)
        assert "DATA-END" not in filt.lines

    def test_bdat_goes_to_the_filter_as_data(self, tmp_path, tiny):
        filt = tiny()
        raw = proxied(tmp_path, filt).raw()
        transaction(raw)
        body = b"Subject: chunked\r\n\r\n.leading dot\r\n"
        raw.send(b"BDAT %d LAST\r\n" % len(body) + body)
        assert raw.reply() == "250 2.0.0 Ok: queued as DOWNSTREAM1"
        assert filt.ended.wait(10)     # the transaction ended with QUIT
        assert filt.lines[-3:] == ["DATA", "DATA-END", "QUIT"]
        assert filt.content.endswith(b"Subject: chunked\r\n\r\n..leading dot\r\n")

    def test_unix_domain_filter(self, tmp_path, tiny):
        path = tmp_path / "filter.sock"
        filt = tiny(unix_path=str(path))
        raw = Server(tmp_path, smtpd_proxy_filter=f"unix:{path}").raw()
        assert transaction(raw)[1] == "250 2.1.5 filter: recipient ok"
        raw.cmd("DATA")
        assert raw.cmd("x\r\n.") == "250 2.0.0 Ok: queued as DOWNSTREAM1"
        assert filt.connections == 1

    def test_proxy_ehlo_and_no_xforward(self, tmp_path, tiny):
        filt = tiny(xforward=False)
        raw = proxied(tmp_path, filt, smtpd_proxy_ehlo="before-filter.example").raw()
        transaction(raw)
        assert filt.lines == ["EHLO before-filter.example", "MAIL FROM:<sender@example.com>",
                              "RCPT TO:<alice@mx.example.com>"]


class TestSpeedAdjust:
    def test_filter_is_connected_after_the_message(self, tmp_path, tiny):
        filt = tiny()
        server = proxied(tmp_path, filt, smtpd_proxy_options="speed_adjust")
        raw = server.raw()
        assert transaction(raw, ["alice@mx.example.com", "bob@mx.example.com"]) == \
            ["250 2.1.0 Ok", "250 2.1.5 Ok", "250 2.1.5 Ok"]
        assert raw.cmd("DATA").startswith("354")
        raw.send(b"Subject: whole\r\n\r\nbody\r\nNOT YET\r\n")
        assert filt.connections == 0
        assert raw.cmd(".") == "250 2.0.0 Ok: queued as DOWNSTREAM1"
        assert filt.ended.wait(10)
        assert [line.split()[0] for line in filt.lines] == \
            ["EHLO", "XFORWARD", "MAIL", "RCPT", "RCPT", "DATA", "DATA-END", "QUIT"]
        assert filt.content.endswith(b"Subject: whole\r\n\r\nbody\r\nNOT YET\r\n")
        assert "NOQUEUE: client=localhost[127.0.0.1]" in server.log()

    def test_a_recipient_refused_at_replay_refuses_the_message(self, tmp_path, tiny):
        filt = tiny(RCPT="550 5.1.1 filter: no")
        raw = proxied(tmp_path, filt, smtpd_proxy_options="speed_adjust").raw()
        transaction(raw)
        raw.cmd("DATA")
        assert raw.cmd("x\r\n.") == "550 5.1.1 filter: no"
        assert "DATA" not in filt.lines


class TestFailures:
    def test_filter_down_is_a_temporary_error_at_rcpt(self, tmp_path):
        port = socket.socket()
        port.bind(("127.0.0.1", 0))     # bound, never listening: connections are refused
        server = Server(tmp_path, smtpd_proxy_filter=f"127.0.0.1:{port.getsockname()[1]}")
        raw = server.raw()
        assert transaction(raw)[1] == "451 4.3.0 Error: queue file write error"
        assert raw.cmd("DATA") == "554 5.5.1 Error: no valid recipients"
        log = server.wait_log("Connection refused")
        assert f"warning: connect to proxy filter 127.0.0.1:{port.getsockname()[1]}: " \
               f"Connection refused" in log
        assert "client=" not in log
        port.close()

    def test_filter_down_with_speed_adjust_fails_the_message(self, tmp_path):
        port = socket.socket()
        port.bind(("127.0.0.1", 0))
        server = Server(tmp_path, smtpd_proxy_filter=f"127.0.0.1:{port.getsockname()[1]}",
                        smtpd_proxy_options="speed_adjust")
        raw = server.raw()
        assert transaction(raw)[1] == "250 2.1.5 Ok"
        raw.cmd("DATA")
        assert raw.cmd("x\r\n.") == "451 4.3.0 Error: queue file write error"
        log = server.wait_log("proxy-reject")
        assert "proxy-reject: END-OF-MESSAGE: 451 4.3.0 Error: queue file write error; " \
               "from=<sender@example.com> to=<alice@mx.example.com>" in log
        port.close()

    def test_a_silent_filter_times_out(self, tmp_path, tiny):
        filt = tiny(END=None)
        server = Server(tmp_path, smtpd_proxy_filter=f"127.0.0.1:{filt.port}",
                        smtpd_proxy_timeout="1s")
        raw = server.raw()
        transaction(raw)
        raw.cmd("DATA")
        assert raw.cmd("x\r\n.") == "451 4.3.0 Error: queue file write error"
        log = server.wait_log("proxy-reject")
        assert f"warning: timeout talking to proxy 127.0.0.1:{filt.port}" in log
        assert raw.cmd("QUIT") == "221 2.0.0 Bye"

    def test_a_malformed_reply_is_a_protocol_error(self, tmp_path, tiny):
        filt = tiny(RCPT="hello there")
        server = proxied(tmp_path, filt)
        raw = server.raw()
        assert transaction(raw)[1] == "451 4.3.0 Error: queue file write error"
        assert "malformed reply" in server.wait_log("malformed")
