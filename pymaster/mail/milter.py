"""The Sendmail milter protocol (version 6), MTA side: talking to mail filters.

A milter is an external program (OpenDKIM, rspamd, clamav-milter …) that
sees a message's SMTP events and content and answers each with a verdict,
and at the end of the message with edits. Postfix's MILTER_README and the
libmilter wire format are the reference: every packet is a 4-byte
big-endian length, a command byte and data; strings are NUL-terminated.

    MTA -> milter   O (OPTNEG) D (MACRO) C H M R T U L N B E (events) A Q
    milter -> MTA   c a r t d y s p (verdicts), + - 2 e h i m b q (edits)

This module owns one milter connection (`Milter`), the milter lists of
main.cf (`parse_milters`: `inet:host:port`, `unix:/path` and Postfix 3.x's
`{ name, connect_timeout=…, default_action=… }` groups), the macros sent
with each event, and a chain run (`run_chain`) in which each milter sees the
edits of the ones before it. A milter that cannot be reached or breaks the
protocol gets its default action (milter_default_action). A milter is a
network peer: a reply packet is at most MAX_PACKET bytes and must arrive
whole within the event's timeout; its end-of-message edits are at most
MAX_EDITS, a replaced body at most message_size_limit bytes, each header
at most header_size_limit, all other edits together message_size_limit.

Interface:
    parse_milters(cfg, text) -> list[Spec]
    Envelope(...)                          what the milters are shown; edited in place
    macro_names(cfg) -> {stage: [names]}
    run_chain(specs, envelope, macros, names) -> Outcome
    Milter(spec, names); .open(); .event(...); .end_of_message(...); .close()
    encode(command, data) -> bytes; parse_reply(text) -> (code, dsn, text)
    MilterError                            unreachable or protocol broken
"""

from __future__ import annotations

import encodings.idna  # noqa: F401  (getaddrinfo needs it; services import before chroot)
import re
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any, Callable

from pymaster.mail.config import Config, parse_time
from pymaster.util import log

PROTOCOL_VERSION = 6
MAX_CHUNK = 65535                   # largest BODY packet libmilter takes by default
# A milter is a network peer: what it sends is bounded before it is read.
# libmilter's largest data size is 1 MB (MILTER_MAX_DATA_SIZE), +1: the command.
MAX_PACKET = (1 << 20) + 1
RECV_SIZE = 65536                   # recv() allocates what it is asked for
MAX_EDITS = 10000                   # end-of-message edits one milter may send

# Actions the MTA offers (SMFIF_*): every edit this module applies.
ACT_ADDHDRS, ACT_CHGBODY, ACT_ADDRCPT, ACT_DELRCPT = 0x01, 0x02, 0x04, 0x08
ACT_CHGHDRS, ACT_QUARANTINE, ACT_CHGFROM, ACT_ADDRCPT_PAR = 0x10, 0x20, 0x40, 0x80
ACT_SETSYMLIST = 0x100
ACTIONS_OFFERED = 0x1FF

# Protocol steps (SMFIP_*): which events a milter skips or answers.
NO_CONNECT, NO_HELO, NO_MAIL, NO_RCPT = 0x01, 0x02, 0x04, 0x08
NO_BODY, NO_HDRS, NO_EOH, NR_HDR = 0x10, 0x20, 0x40, 0x80
NO_UNKNOWN, NO_DATA, P_SKIP, RCPT_REJ = 0x100, 0x200, 0x400, 0x800
NR_CONN, NR_HELO, NR_MAIL, NR_RCPT = 0x1000, 0x2000, 0x4000, 0x8000
NR_DATA, NR_UNKN, NR_EOH, NR_BODY = 0x10000, 0x20000, 0x40000, 0x80000
HDR_LEADSPC = 0x100000
STEPS_OFFERED = 0x1FFFFF

# Events: command byte, name in log lines, the step flags that skip it or
# make it answerless, the macro stage (SMFIM_*) and its main.cf parameter.
EVENTS = {
    "connect": (b"C", "CONNECT", NO_CONNECT, NR_CONN, 0, "milter_connect_macros"),
    "helo": (b"H", "HELO", NO_HELO, NR_HELO, 1, "milter_helo_macros"),
    "mail": (b"M", "MAIL", NO_MAIL, NR_MAIL, 2, "milter_mail_macros"),
    "rcpt": (b"R", "RCPT", NO_RCPT, NR_RCPT, 3, "milter_rcpt_macros"),
    "data": (b"T", "DATA", NO_DATA, NR_DATA, 4, "milter_data_macros"),
    # libmilter has no SMFIM stage for UNKNOWN (a milter cannot ask for its
    # macros): 7 is this module's own key for milter_unknown_command_macros.
    "unknown": (b"U", "UNKNOWN", NO_UNKNOWN, NR_UNKN, 7, "milter_unknown_command_macros"),
    "header": (b"L", "END-OF-MESSAGE", NO_HDRS, NR_HDR, None, ""),
    "eoh": (b"N", "END-OF-MESSAGE", NO_EOH, NR_EOH, 6, "milter_end_of_header_macros"),
    "body": (b"B", "END-OF-MESSAGE", NO_BODY, NR_BODY, None, ""),
    "eom": (b"E", "END-OF-MESSAGE", 0, 0, 5, "milter_end_of_data_macros"),
}
VERDICTS = {b"c": "continue", b"a": "accept", b"r": "reject", b"t": "tempfail",
            b"d": "discard", b"s": "skip", b"y": "replycode"}
EDITS = {b"+", b"-", b"2", b"e", b"h", b"i", b"m", b"b", b"q"}
PROGRESS = b"p"

DEFAULT_REPLIES = {"reject": ("550", "5.7.1", "Command rejected"),
                   "tempfail": ("451", "4.7.1", "Service unavailable - try again later")}
DEFAULT_ACTIONS = ("accept", "reject", "tempfail", "quarantine")


class MilterError(Exception):
    """The milter cannot be reached or broke the protocol; the text is for the log."""


@dataclass(frozen=True)
class Spec:
    """One configured milter: its address and its own timeouts and default action."""
    name: str
    connect_timeout: float = 30.0
    command_timeout: float = 30.0
    content_timeout: float = 300.0
    default_action: str = "tempfail"
    protocol: int = PROTOCOL_VERSION
    # Bounds on one milter's end-of-message edits (0: none): a replaced body
    # as message_size_limit, each header as header_size_limit.
    message_size_limit: int = 0
    header_size_limit: int = 0


@dataclass
class Envelope:
    """What the milters see, and what their edits change.

    headers are [name, value] pairs, value as it follows the colon (leading
    space and folded lines with LF included, no final newline); body has LF
    line ends. client_* describe the SMTP client (localhost for local mail)."""
    sender: str
    recipients: list[str]
    headers: list[list[str]]
    body: bytes
    client_name: str = "localhost"
    client_address: str = "127.0.0.1"
    client_port: int = 0
    helo: str = ""
    body_replaced: bool = False
    # milter_header_checks: each header a milter adds, inserts or changes, as
    # (name, value); what to apply instead, or None to drop that edit.
    check_header: Callable[[str, str], tuple[str, str] | None] | None = None


@dataclass
class Outcome:
    """The chain's verdict: "accept" (edits applied), "reject", "tempfail",
    "discard" or "hold"; reply and event for reject/tempfail; reason for hold."""
    action: str = "accept"
    code: str = ""
    dsn: str = ""
    text: str = ""
    event: str = "END-OF-MESSAGE"
    reason: str = ""


# -- configuration --------------------------------------------------------------------
def parse_milters(cfg: Config, text: str) -> list[Spec]:
    """parse_milters - the milters of a smtpd_milters-style list, with main.cf defaults.

    A `{ name, key=value, … }` group overrides connect_timeout,
    command_timeout, content_timeout, default_action and protocol for
    that milter; an unknown key or value is a configuration error."""
    base: dict[str, Any] = {"connect_timeout": float(cfg.time("milter_connect_timeout")),
            "command_timeout": float(cfg.time("milter_command_timeout")),
            "content_timeout": float(cfg.time("milter_content_timeout")),
            "default_action": cfg.get("milter_default_action").strip().lower(),
            "protocol": cfg.int("milter_protocol"),
            "message_size_limit": max(cfg.int("message_size_limit"), 0),
            "header_size_limit": max(cfg.int("header_size_limit"), 0)}
    specs = []
    for item in _split_groups(text):
        words = item if isinstance(item, list) else [item]
        if not words:
            continue
        settings = dict(base)
        for word in words[1:]:
            key, eq, value = word.partition("=")
            settings[key.strip()] = _setting(key.strip(), value.strip() if eq else None)
        if settings["default_action"] not in DEFAULT_ACTIONS:
            raise ValueError(f"bad milter default_action: {settings['default_action']}")
        specs.append(Spec(words[0], **settings))
    return specs


def _setting(key: str, value: str | None) -> float | int | str:
    if value is None or not value:
        raise ValueError(f"milter setting without a value: {key}")
    if key.endswith("_timeout"):
        return float(parse_time(value, "s", key))
    if key == "default_action":
        return value.lower()
    if key == "protocol":
        return int(value)
    raise ValueError(f"unknown milter setting: {key}")


def _split_groups(text: str) -> list:
    """_split_groups - words of a list, a `{ … }` group as one list of words."""
    out: list = []
    for m in re.finditer(r"\{([^}]*)\}|([^\s,{}]+)", text or ""):
        if m.group(1) is not None:
            out.append([w for w in re.split(r"[\s,]+", m.group(1)) if w])
        else:
            out.append(m.group(2))
    return out


# -- wire format ----------------------------------------------------------------------
def encode(command: bytes, data: bytes = b"") -> bytes:
    """encode - one packet: length (command byte included), command, data."""
    return struct.pack("!I", len(data) + 1) + command + data


def strings(*values: str) -> bytes:
    """strings - NUL-terminated UTF-8 strings, concatenated."""
    return b"".join(v.encode("utf-8", "surrogateescape") + b"\0" for v in values)


def unstrings(data: bytes) -> list[str]:
    """unstrings - the NUL-terminated strings of a packet's data."""
    parts = data.split(b"\0")
    if parts and parts[-1] == b"":
        parts.pop()
    return [p.decode("utf-8", "surrogateescape") for p in parts]


def parse_reply(text: str) -> tuple[str, str, str]:
    """parse_reply - (code, dsn, text) of an SMFIR_REPLYCODE text such as
    `554 5.7.1 go away`; the DSN defaults to X.7.1 as Postfix's does."""
    first = text.replace("\r\n", "\n").split("\n")[0]
    m = re.match(r"([245]\d\d)[ -]?(?:([245]\.\d{1,3}\.\d{1,3})\s*)?(.*)", first)
    if not m:
        raise MilterError(f"malformed reply: {first!r}")
    code, dsn, rest = m.groups()
    return code, dsn or f"{code[0]}.7.1", rest.strip()


def connect_data(env: Envelope) -> bytes:
    """connect_data - SMFIC_CONNECT: host name, family, port, address."""
    addr = env.client_address
    if not addr:
        return strings(env.client_name) + b"U"
    family = b"6" if ":" in addr else b"4"
    return (strings(env.client_name) + family + struct.pack("!H", env.client_port)
            + strings(addr))


def body_chunks(body: bytes):
    """body_chunks - the body with CRLF line ends, in packets of at most MAX_CHUNK."""
    wire = body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    for start in range(0, len(wire), MAX_CHUNK):
        yield wire[start:start + MAX_CHUNK]


# -- one connection -------------------------------------------------------------------
class Milter:
    """Milter - one connection to one milter, for one message."""

    def __init__(self, spec: Spec, names: dict[int, list[str]] | None = None) -> None:
        self.spec = spec
        self.names = names or {}            # macros per stage unless the milter asks
        self.sock: socket.socket | None = None
        self.actions = 0
        self.steps = 0
        self.version = 0
        self.symlists: dict[int, list[str]] = {}

    def open(self) -> None:
        """open - connect and negotiate (SMFIC_OPTNEG)."""
        self.sock = self._connect()
        self.sock.settimeout(self.spec.command_timeout)
        self._send(b"O", struct.pack("!III", self.spec.protocol, ACTIONS_OFFERED,
                                     STEPS_OFFERED))
        command, data = self._read("SMFIC_OPTNEG")
        if command != b"O" or len(data) < 12:
            raise MilterError(f"unexpected reply to SMFIC_OPTNEG: {command!r}")
        self.version, self.actions, self.steps = struct.unpack("!III", data[:12])
        if self.version < 2:
            raise MilterError(f"protocol version {self.version} is not supported")
        self.symlists = _symlists(data[12:])

    def _connect(self) -> socket.socket:
        kind, _, where = self.spec.name.partition(":")
        try:
            if kind == "unix":
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self.spec.connect_timeout)
                sock.connect(where)
                return sock
            if kind in ("inet", "inet6"):
                host, _, port = where.rpartition(":")
                return socket.create_connection((host.strip("[]"), int(port)),
                                                self.spec.connect_timeout)
        except (OSError, ValueError) as e:
            raise MilterError(f"connect to Milter service {self.spec.name}: "
                              f"{_why(e)}") from None
        raise MilterError(f"unsupported milter address: {self.spec.name}")

    def close(self, quit: bool = True) -> None:
        """close - SMFIC_QUIT when the conversation went well, then hang up."""
        if self.sock is None:
            return
        try:
            if quit:
                self.sock.sendall(encode(b"Q"))
        except OSError:
            pass            # the milter is going away anyway
        self.sock.close()
        self.sock = None

    def skips(self, event: str) -> bool:
        """skips - whether the milter asked not to see EVENT (UNKNOWN came with
        protocol version 3: an older milter never sees it)."""
        if event == "unknown" and self.version < 3:
            return True
        return bool(self.steps & EVENTS[event][2])

    def event(self, event: str, data: bytes, macros: dict[str, str]) -> tuple[str, bytes]:
        """event - send one event with its macros; the verdict ("continue" when
        the milter does not answer this event) and its data."""
        command, _, _, no_reply, stage, _ = EVENTS[event]
        if stage is not None:
            self._send_macros(command, stage, macros)
        self._send(command, data)
        if self.steps & no_reply:
            return "continue", b""
        return self._verdict(event, None)

    def end_of_message(self, macros: dict[str, str]) -> tuple[str, bytes, list]:
        """end_of_message - SMFIC_BODYEOB; the verdict, its data, and the edits."""
        self._send_macros(b"E", 5, macros)
        self._send(b"E")
        edits: list = []
        verdict, data = self._verdict("eom", edits)
        return verdict, data, edits

    def abort(self) -> None:
        """abort - SMFIC_ABORT: forget this message (no reply)."""
        self._send(b"A")

    def _verdict(self, event: str, edits: list | None) -> tuple[str, bytes]:
        timeout = self.spec.content_timeout if event in ("header", "eoh", "body", "eom") \
            else self.spec.command_timeout
        assert self.sock is not None  # open() connected
        self.sock.settimeout(timeout)
        budget = _EditBudget(self.spec)
        while True:
            command, data = self._read(f"SMFIC_{event.upper()}", timeout)
            if command == PROGRESS:
                continue                    # the milter asks for more time
            if command in VERDICTS:
                return VERDICTS[command], data
            if command in EDITS and edits is not None:
                budget.spend(command, data)
                edits.append((command, data))
                continue
            raise MilterError(f"unexpected filter response {command!r} "
                              f"after event {EVENTS[event][1]}")

    def _send_macros(self, command: bytes, stage: int, macros: dict[str, str]) -> None:
        names = self.symlists.get(stage, self.names.get(stage, []))
        pairs = [(n, macros[n]) for n in names if macros.get(n) not in (None, "")]
        if pairs:
            self._send(b"D", command + strings(*[s for pair in pairs for s in pair]))

    def _send(self, command: bytes, data: bytes = b"") -> None:
        assert self.sock is not None  # open() connected
        try:
            self.sock.sendall(encode(command, data))
        except OSError as e:
            raise MilterError(f"can't send {command.decode()} packet: {_why(e)}") from None

    def _read(self, what: str, timeout: float | None = None) -> tuple[bytes, bytes]:
        """_read - one reply packet, whole within TIMEOUT (default: the command
        timeout): a milter that trickles bytes cannot hold us for longer."""
        timeout = timeout or self.spec.command_timeout
        deadline = time.monotonic() + timeout
        head = self._read_exactly(5, f"can't read {what} reply packet header", deadline)
        length = struct.unpack("!I", head[:4])[0]
        if length < 1 or length > MAX_PACKET:
            raise MilterError(f"bad {what} reply packet length: {length}")
        data = self._read_exactly(length - 1, f"can't read {what} reply packet body", deadline)
        assert self.sock is not None
        self.sock.settimeout(timeout)       # the next send gets the whole time again
        return head[4:5], data

    def _read_exactly(self, size: int, what: str, deadline: float) -> bytes:
        assert self.sock is not None  # open() connected
        buf = bytearray()
        while len(buf) < size:
            try:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise socket.timeout("timed out")
                self.sock.settimeout(left)
                chunk = self.sock.recv(min(size - len(buf), RECV_SIZE))
            except OSError as e:
                raise MilterError(f"{what}: {_why(e)}") from None
            if not chunk:
                raise MilterError(f"{what}: Connection reset by peer")
            buf += chunk
        return bytes(buf)


class _EditBudget:
    """_EditBudget - what one milter's end-of-message edits may add up to."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.count = 0
        self.body = 0
        self.other = 0

    def spend(self, command: bytes, data: bytes) -> None:
        """spend - count one edit; MilterError when it goes past a bound."""
        limit = self.spec.message_size_limit
        self.count += 1
        if self.count > MAX_EDITS:
            raise MilterError(f"too many message edits (more than {MAX_EDITS})")
        if command == b"b":
            self.body += len(data)
            if limit and self.body > limit:
                raise MilterError(f"replaced body exceeds message_size_limit {limit}")
            return
        if command in (b"h", b"i", b"m") and self.spec.header_size_limit \
                and len(data) > self.spec.header_size_limit:
            raise MilterError(f"header edit exceeds header_size_limit "
                              f"{self.spec.header_size_limit}")
        self.other += len(data)
        if limit and self.other > limit:
            raise MilterError(f"message edits exceed message_size_limit {limit}")


def _why(e: Exception) -> str:
    if isinstance(e, socket.timeout):
        return "Connection timed out"
    return getattr(e, "strerror", None) or str(e)


def _symlists(data: bytes) -> dict[int, list[str]]:
    """_symlists - the macro lists a milter asked for in its OPTNEG reply."""
    out: dict[int, list[str]] = {}
    while len(data) >= 5:
        stage = struct.unpack("!I", data[:4])[0]
        text, _, data = data[4:].partition(b"\0")
        out[stage] = text.decode("utf-8", "surrogateescape").split()
    return out


# -- the chain ------------------------------------------------------------------------
def macro_names(cfg: Config) -> dict[int, list[str]]:
    """macro_names - the macros each stage sends (milter_*_macros), by SMFIM stage."""
    return {stage: cfg.get(param).replace(",", " ").split()
            for _, _, _, _, stage, param in EVENTS.values() if param and stage is not None}


def run_chain(specs: list[Spec], env: Envelope, macros: dict[str, str],
              names: dict[int, list[str]]) -> Outcome:
    """run_chain - run every milter over ENV in turn; each sees the edits of the
    ones before it. The first reject, tempfail or discard ends the chain.
    MACROS are the values known, NAMES the ones each stage sends (macro_names)."""
    outcome = Outcome()
    for spec in specs:
        try:
            result = _run_one(spec, env, macros, names)
        except MilterError as e:
            text = str(e)
            log.warning(text if text.startswith("connect to") else f"milter {spec.name}: {text}")
            result = _default_action(spec)
        if result.action == "hold":
            outcome = result            # remembered; later milters still run
        elif result.action != "accept":
            return result
    return outcome


def _default_action(spec: Spec) -> Outcome:
    action = spec.default_action
    if action in DEFAULT_REPLIES:
        code, dsn, text = DEFAULT_REPLIES[action]
        return Outcome(action, code, dsn, text)
    if action == "quarantine":
        return Outcome("hold", reason="milter triggers HOLD action")
    return Outcome()


def _run_one(spec: Spec, env: Envelope, macros: dict, names: dict) -> Outcome:
    milter = Milter(spec, names)
    try:
        milter.open()
        outcome = _converse(milter, env, macros)
    except BaseException:
        milter.close(quit=False)
        raise
    milter.close()
    return outcome


def _converse(milter: Milter, env: Envelope, macros: dict) -> Outcome:
    """_converse - the events of one message; the verdict, with edits applied."""
    mail_macros = dict(macros, **{"{mail_addr}": env.sender})
    steps = [("connect", connect_data(env), macros), ("helo", strings(env.helo), macros),
             ("mail", strings(f"<{env.sender}>"), mail_macros)]
    steps += [("rcpt", strings(f"<{r}>"), dict(mail_macros, **{"{rcpt_addr}": r}))
              for r in env.recipients]
    steps.append(("data", b"", mail_macros))
    for event, data, event_macros in steps:
        if milter.skips(event):
            continue
        verdict, reply = milter.event(event, data, event_macros)
        done = _verdict_outcome(verdict, reply, EVENTS[event][1], event == "rcpt")
        if done is not None:
            return done
    return _end_of_message(milter, env, mail_macros)[0]


def _end_of_message(milter: Milter, env: Envelope, macros: dict) -> tuple[Outcome, list]:
    """_end_of_message - the content, then end of message: the verdict, and the
    edits it applied to ENV (none unless the message is accepted or held)."""
    done = _content(milter, env, macros)
    if done is not None:
        return done, []
    verdict, reply, edits = milter.end_of_message(macros)
    outcome = _verdict_outcome(verdict, reply, "END-OF-MESSAGE", False) or Outcome()
    if outcome.action not in ("accept", "hold"):
        return outcome, []
    hold = apply_edits(env, edits, bool(milter.steps & HDR_LEADSPC))
    if hold is not None:
        outcome = Outcome("hold", reason=hold)
    return outcome, edits


def _content(milter: Milter, env: Envelope, macros: dict) -> Outcome | None:
    """_content - headers, end of headers, body chunks; an early verdict or None."""
    if not milter.skips("header"):
        lead = bool(milter.steps & HDR_LEADSPC)
        for name, value in env.headers:
            sent = value if lead else value.lstrip(" \t")
            verdict, reply = milter.event("header", strings(name, sent), macros)
            done = _verdict_outcome(verdict, reply, "END-OF-MESSAGE", False)
            if done is not None:
                return done
    if not milter.skips("eoh"):
        done = _verdict_outcome(*milter.event("eoh", b"", macros), "END-OF-MESSAGE", False)
        if done is not None:
            return done
    if not milter.skips("body"):
        for chunk in body_chunks(env.body):
            verdict, reply = milter.event("body", chunk, macros)
            if verdict == "skip":
                break
            done = _verdict_outcome(verdict, reply, "END-OF-MESSAGE", False)
            if done is not None:
                return done
    return None


def _verdict_outcome(verdict: str, reply: bytes, event: str, rcpt: bool) -> Outcome | None:
    """_verdict_outcome - None to go on; an Outcome when the milter decided.

    "accept" before the end means: this milter wants to see no more of the
    message (the message goes on to the next milter, unedited by this one)."""
    if verdict in ("continue", "skip"):
        return None
    if verdict == "accept":
        return Outcome()
    if verdict == "discard":
        return Outcome("discard", event=event)
    if verdict == "replycode":
        code, dsn, text = parse_reply(unstrings(reply)[0] if reply else "")
        action = "reject" if code[0] == "5" else "tempfail"
        return Outcome(action, code, dsn, text, event)
    code, dsn, text = DEFAULT_REPLIES[verdict]
    return Outcome(verdict, code, dsn, text, event)


# -- edits ----------------------------------------------------------------------------
def apply_edits(env: Envelope, edits: list, leadspc: int = 0) -> str | None:
    """apply_edits - apply end-of-message edits to ENV in the order given;
    a quarantine reason when one asked for the hold queue, else None."""
    hold = None
    body = bytearray()
    for command, data in edits:
        if command == b"b":
            body += data
            env.body_replaced = True
            continue
        if command == b"q":
            hold = (unstrings(data) or [""])[0] or "milter triggers HOLD action"
            continue
        _apply_edit(env, command, data, leadspc)
    if env.body_replaced:
        env.body = bytes(body).replace(b"\r\n", b"\n")
    return hold


def _apply_edit(env: Envelope, command: bytes, data: bytes, leadspc: int) -> None:
    if command in (b"i", b"m"):
        if len(data) < 4:
            raise MilterError(f"short {command.decode()} packet")
        index = struct.unpack("!I", data[:4])[0]
        name, value = (unstrings(data[4:]) + ["", ""])[:2]
        value = _header_value(value, leadspc)
        if command == b"m" and not value.strip():
            change_header(env.headers, name, index, value)      # a deletion: not checked
            return
        checked = _checked_header(env, name, value)
        if checked is None:
            return
        if command == b"i":
            env.headers.insert(min(index, len(env.headers)), list(checked))
        elif checked[0].lower() == name.lower():
            change_header(env.headers, name, index, checked[1])
        else:       # REPLACE gave another header: the old one goes, the new one is added
            change_header(env.headers, name, index, "")
            env.headers.append(list(checked))
    elif command == b"h":
        name, value = (unstrings(data) + ["", ""])[:2]
        checked = _checked_header(env, name, _header_value(value, leadspc))
        if checked is not None:
            env.headers.append(list(checked))
    elif command in (b"+", b"2"):
        rcpt = _unbracket((unstrings(data) or [""])[0])
        if rcpt and rcpt not in env.recipients:
            env.recipients.append(rcpt)
    elif command == b"-":
        rcpt = _unbracket((unstrings(data) or [""])[0])
        env.recipients[:] = [r for r in env.recipients if r.lower() != rcpt.lower()]
    elif command == b"e":
        env.sender = _unbracket((unstrings(data) or [""])[0])


def _checked_header(env: Envelope, name: str, value: str) -> tuple[str, str] | None:
    """_checked_header - a milter's header through env.check_header
    (milter_header_checks); None: the edit is dropped."""
    if env.check_header is None:
        return name, value
    return env.check_header(name, value)


def change_header(headers: list[list[str]], name: str, index: int, value: str) -> None:
    """change_header - SMFIR_CHGHEADER: the INDEX-th (from 1) header called NAME
    gets VALUE; an empty value deletes it; past the last one, NAME is added."""
    seen = 0
    for pos, (have, _) in enumerate(headers):
        if have.lower() == name.lower():
            seen += 1
            if seen == max(index, 1):
                if value.strip():
                    headers[pos] = [have, value]
                else:
                    del headers[pos]
                return
    if value.strip():
        headers.append([name, value])


def _header_value(value: str, leadspc: int) -> str:
    """_header_value - a milter's value as stored: LF line ends, and the space
    after the colon that a milter without HDR_LEADSPC leaves to the MTA."""
    value = value.replace("\r\n", "\n")
    return value if leadspc or value[:1] in (" ", "\t") else " " + value


def _unbracket(addr: str) -> str:
    addr = addr.strip()
    return addr[1:-1] if addr.startswith("<") and addr.endswith(">") else addr


# -- one SMTP session's chain, event by event (smtpd) ------------------------------
# Postfix's smtpd keeps its milters connected from CONNECT to QUIT and sends
# each event as the client's command arrives, so a verdict applies to that
# command. SessionChain is that side: blocking like the rest of this module
# (smtpd calls it from a worker thread), never used by two threads at once.

CONNECTION_EVENTS = ("connect", "helo")     # an accept there: no more for the session


class _Member:
    """_Member - one milter of a SessionChain and where it is in the conversation.

    state: "new" (not connected yet), "open", "accepted" (wants no more of
    this message), "out" (no more of this session), "failed" (every later
    event gets its default action)."""

    def __init__(self, milter: Milter) -> None:
        self.milter = milter
        self.state = "new"


class SessionChain:
    """SessionChain - the milters of one SMTP session; see the section comment.

    event() sends one SMTP event to each milter still in the conversation;
    content() the message and end of message; abort() marks the transaction
    gone (SMFIC_ABORT goes before the next event); close() ends the session."""

    def __init__(self, specs: list[Spec], names: dict[int, list[str]]) -> None:
        self.members = [_Member(Milter(spec, names)) for spec in specs]
        self.names = names
        self.in_message = False     # MAIL was sent and the message is not finished
        self.abort_due = False

    def event(self, event: str, data: bytes, macros: dict[str, str]) -> Outcome | None:
        """event - EVENT to each milter in turn; the first reject, tempfail or
        discard ends it there; a hold is remembered. None: nobody objects."""
        self._flush_abort()
        if event == "mail":
            self.in_message = True
            for member in self.members:
                if member.state == "accepted":
                    member.state = "open"
        held = None
        for member in self.members:
            outcome = self._member_event(member, event, data, macros)
            if outcome is not None and outcome.action == "hold":
                held = outcome
            elif outcome is not None:
                if event == "mail" and outcome.action != "discard":
                    self.in_message = False     # refused: no message to abort
                return outcome
        return held

    def _member_event(self, member: _Member, event: str, data: bytes,
                      macros: dict[str, str]) -> Outcome | None:
        name = EVENTS[event][1]
        if member.state == "failed":
            return _stage_default(member.milter.spec, name)
        if member.state in ("out", "accepted"):
            return None
        if not self._opened(member, name):
            return _stage_default(member.milter.spec, name)
        if member.milter.skips(event):
            return None
        try:
            verdict, reply = member.milter.event(event, data, macros)
            outcome = _verdict_outcome(verdict, reply, name, event == "rcpt")
        except MilterError as e:
            return self._failed(member, e, name)
        if outcome is not None and outcome.action == "accept":
            member.state = "out" if event in CONNECTION_EVENTS else "accepted"
            return None
        if outcome is not None and event == "connect" and outcome.action != "hold":
            member.state = "out"        # a refused connection is over for the milter
            member.milter.close()
        return outcome

    def _opened(self, member: _Member, event_name: str) -> bool:
        """_opened - connect and negotiate on first use; False when that failed."""
        if member.state != "new":
            return True
        try:
            member.milter.open()
        except MilterError as e:
            self._failed(member, e, event_name)
            return False
        member.state = "open"
        return True

    def _failed(self, member: _Member, error: MilterError, event_name: str) -> Outcome | None:
        """_failed - warn once; from now on the milter answers with its default action."""
        text = str(error)
        log.warning(text if text.startswith("connect to") else
                    f"milter {member.milter.spec.name}: {text}")
        member.milter.close(quit=False)
        member.state = "failed" if member.milter.spec.default_action != "accept" else "out"
        return _stage_default(member.milter.spec, event_name)

    def content(self, env: Envelope, macros: dict[str, str]) -> tuple[Outcome, list]:
        """content - headers, body and end of message to each milter still in the
        message; the verdict, and each milter's edits as (edits, leadspc) in
        chain order. Each milter sees the edits of the ones before it (applied
        to ENV), as in run_chain."""
        self._flush_abort()
        outcome, edits = Outcome(), []  # type: Outcome, list
        for member in self.members:
            result = self._member_content(member, env, macros, edits)
            if result is not None and result.action == "hold":
                outcome = result
            elif result is not None and result.action != "accept":
                outcome = result
                break
        self.in_message = False
        for member in self.members:
            if member.state == "accepted":
                member.state = "open"
        return outcome, edits

    def _member_content(self, member: _Member, env: Envelope, macros: dict,
                        edits: list) -> Outcome | None:
        if member.state == "failed":
            return _stage_default(member.milter.spec, "END-OF-MESSAGE")
        if member.state != "open":
            return None
        milter = member.milter
        try:
            outcome, got = _end_of_message(milter, env, macros)
            if got:
                edits.append((got, bool(milter.steps & HDR_LEADSPC)))
        except MilterError as e:
            return self._failed(member, e, "END-OF-MESSAGE")
        return outcome

    def may_send(self, *names: str) -> bool:
        """may_send - whether any of the macro NAMES can go to a milter of the
        chain: a configured list names it, or a milter asked for its own lists
        (or has not negotiated yet)."""
        for member in self.members:
            if member.state == "new" or member.milter.symlists:
                return True
        return any(n in stage for stage in self.names.values() for n in names)

    def abort(self) -> None:
        """abort - the transaction is gone (RSET, HELO, a refused message):
        SMFIC_ABORT goes to the milters before their next event."""
        if self.in_message:
            self.abort_due = True
        self.in_message = False

    def _flush_abort(self) -> None:
        if not self.abort_due:
            return
        self.abort_due = False
        for member in self.members:
            if member.state in ("open", "accepted"):
                try:
                    member.milter.abort()
                except MilterError as e:
                    self._failed(member, e, "ABORT")
                else:
                    member.state = "open"

    def close(self) -> None:
        """close - the session is over: SMFIC_ABORT when a message was open, SMFIC_QUIT."""
        if self.in_message:
            self.abort()
        self._flush_abort()
        for member in self.members:
            member.milter.close(quit=member.state in ("open", "accepted"))
            member.state = "out"


def _stage_default(spec: Spec, event_name: str) -> Outcome | None:
    """_stage_default - the default action of a failed milter at EVENT_NAME; None
    for accept."""
    outcome = _default_action(spec)
    if outcome.action == "accept":
        return None
    outcome.event = event_name
    return outcome
