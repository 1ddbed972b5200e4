"""Every SMTP reply text and log line shape smtpd uses, defined once.

Postfix's exact wording is the reference (smtpd(8) and the replies a
Postfix 3.x server gives); external tools parse the log lines, so their
shapes live here, where a test can check them.

Interface:
    constants for fixed replies (OK_MAIL, ERR_NEED_MAIL ...)
    ehlo_lines(hostname, features) -> list[str]
    timeout(host), too_many_errors(host), queued(queue_id)
    log_connect(peer), log_disconnect(peer, counts), log_reject(...)
    log_action(queue_id, action, stage, peer, text, ...)   hold:, warn:, reject_warning: ...
    log_event(event, stage, peer)        "timeout after DATA from NAME[ADDR]"
    printable(data) -> str               client input escaped for the log
    add_footer(reply, footer, values) -> str   smtpd_reject_footer on a 4xx/5xx reply
"""

from __future__ import annotations

import re
import time

GREETING = "220 {banner}"
OK = "250 2.0.0 Ok"
OK_MAIL = "250 2.1.0 Ok"
OK_RCPT = "250 2.1.5 Ok"
GO_AHEAD = "354 End data with <CR><LF>.<CR><LF>"
BYE = "221 2.0.0 Bye"

ERR_UNKNOWN_COMMAND = "502 5.5.2 Error: command not recognized"
ERR_BAD_SYNTAX = "500 5.5.2 Error: bad syntax"
ERR_LINE_TOO_LONG = "500 5.5.2 Error: command line too long"
ERR_BAD_UTF8 = "500 5.5.2 Error: bad UTF-8 syntax"   # smtputf8_enable: commands must be UTF-8
ERR_NEED_HELO = "503 5.5.1 Error: send HELO/EHLO first"
ERR_NEED_MAIL = "503 5.5.1 Error: need MAIL command"
ERR_NEED_RCPT = "503 5.5.1 Error: need RCPT command"
ERR_NO_VALID_RCPTS = "554 5.5.1 Error: no valid recipients"   # MAIL given, every RCPT refused
ERR_NESTED_MAIL = "503 5.5.1 Error: nested MAIL command"
ERR_MAIL_IN_PROGRESS = "503 5.5.1 Error: MAIL transaction in progress"
ERR_BDAT_AFTER_DATA = "503 5.5.1 Error: DATA after BDAT"  # RFC 3030 2: no mixing
ERR_NULL_BDAT = "551 5.7.1 Null BDAT request"   # BDAT 0 without LAST
ERR_MAIL_AFTER_BDAT = "503 5.5.1 Error: MAIL after BDAT"  # inside a BDAT sequence
ERR_RCPT_AFTER_BDAT = "503 5.5.1 Error: RCPT after BDAT"
ERR_BDAT_CHUNK_SIZE = "552 5.3.4 Chunk exceeds message size limit"
ERR_BDAT_DISCARDED = "551 5.0.0 Discarded {count} bytes after earlier error"
ERR_SYNTAX_HELO = "501 Syntax: HELO hostname"
ERR_SYNTAX_EHLO = "501 Syntax: EHLO hostname"
ERR_SYNTAX_MAIL = "501 5.5.4 Syntax: MAIL FROM:<address>"
ERR_SYNTAX_RCPT = "501 5.5.4 Syntax: RCPT TO:<address>"
ERR_SYNTAX_DATA = "501 5.5.4 Syntax: DATA"
ERR_SYNTAX_BDAT = "521 5.5.4 Syntax: BDAT count [LAST]"   # the byte stream is lost: hang up
ERR_SYNTAX_RSET = "501 5.5.4 Syntax: RSET"
ERR_SYNTAX_QUIT = "501 5.5.4 Syntax: QUIT"
ERR_SYNTAX_VRFY = "501 5.5.4 Syntax: VRFY address"   # + " [SMTPUTF8]" when enabled
ERR_SYNTAX_ETRN = "500 Syntax: ETRN domain"
ERR_BAD_SENDER = "501 5.1.7 Bad sender address syntax"
ERR_BAD_RECIPIENT = "501 5.1.3 Bad recipient address syntax"
ERR_BAD_SIZE = "501 5.5.4 Bad message size syntax"
ERR_BAD_BODY = "501 5.5.4 Unsupported BODY parameter"
ERR_BAD_RET = "501 5.5.4 Bad RET parameter syntax"
ERR_BAD_ENVID = "501 5.5.4 Bad ENVID parameter syntax"
ERR_BAD_NOTIFY = "501 5.5.4 Error: Bad NOTIFY parameter syntax"
ERR_BAD_ORCPT = "501 5.5.4 Error: Bad ORCPT parameter syntax"
ERR_SMTPUTF8_DISABLED = "504 5.5.4 SMTPUTF8 is not supported"
ERR_UNSUPPORTED_OPTION = "555 5.5.4 Unsupported option: {option}"
ERR_XVERP_DELIMS = "501 5.5.4 Error: XVERP needs two characters from {filter}"
ERR_XVERP_NULL_SENDER = "503 5.5.4 Error: XVERP requires non-null sender"
ERR_SIZE_LIMIT = "552 5.3.4 Message size exceeds fixed limit"
ERR_TOO_MANY_RCPTS = "452 4.5.3 Error: too many recipients"
ERR_VRFY_DISABLED = "502 5.5.1 VRFY command is disabled"
ERR_QUEUE_WRITE = "451 4.3.0 Error: queue file write error"
ERR_INSUFFICIENT_SPACE = "452 4.3.1 Insufficient system storage"
# smtpd_forbid_bare_newline = reject; the log line's text is BARE_LF_LOG alone.
ERR_BARE_LF = "{code} 5.5.2 {hostname} Error: bare <LF> received"
BARE_LF_LOG = "bare <LF> received"
ERR_PIPELINING = "554 5.5.0 Error: SMTP protocol synchronization"
ERR_ETRN_UNAVAILABLE = "459 <{domain}>: service unavailable"   # Postfix: no enhanced code
ERR_TEMP_LOOKUP = "451 4.3.0 <{address}>: Temporary lookup failure"
ERR_CONFIGURATION = "451 4.3.5 Server configuration error"   # a bad list, table or milter
# An access table that could not be opened, worded for the stage:
# "451 4.3.5 <x@y>: Recipient address rejected: Server configuration error".
CONFIGURATION_ERROR_TEXT = "Server configuration error"
# An address that resolves to the error transport with no text of its own.
ADDRESS_UNDELIVERABLE_TEXT = "Address is undeliverable"
ETRN_STARTED = "250 Queuing started"
ERR_ETRN_FAILED = "458 Unable to queue messages"                # the flush service failed
VRFY_OK = "252 2.0.0 {address}"
HELO_OK = "250 {hostname}"

# AUTH (RFC 4954)
OK_AUTH = "235 2.7.0 Authentication successful"
ERR_AUTH_FAILED = "535 5.7.8 Error: authentication failed: {reason}"
ERR_AUTH_NOT_ENABLED = "503 5.5.1 Error: authentication not enabled"
ERR_AUTH_ALREADY = "503 5.5.1 Error: already authenticated"
ERR_SYNTAX_AUTH = "501 5.5.4 Syntax: AUTH mechanism"
ERR_AUTH_ABORTED = "501 5.7.0 Authentication aborted"
ERR_AUTH_DECODE = "501 5.5.2 Cannot decode response"
ERR_AUTH_NO_MECH = "535 5.7.8 Error: authentication failed: Invalid authentication mechanism"
ERR_AUTH_SERVER = "454 4.7.0 Temporary authentication failure: {reason}"

# STARTTLS (RFC 3207)
TLS_READY = "220 2.0.0 Ready to start TLS"
ERR_NOT_IMPLEMENTED = "502 5.5.1 Error: command not implemented"
ERR_TLS_ALREADY_ACTIVE = "554 5.5.1 Error: TLS already active"
ERR_SYNTAX_STARTTLS = "501 5.5.4 Syntax: STARTTLS"
ERR_TLS_LOCAL_PROBLEM = "454 4.7.0 TLS not available due to local problem"
ERR_MUST_STARTTLS = "530 5.7.0 Must issue a STARTTLS command first"

# XCLIENT and XFORWARD
ERR_XCLIENT_AUTH = "550 5.7.0 Error: insufficient authorization"
ERR_XCLIENT_SYNTAX = "501 5.5.4 Syntax: XCLIENT attribute=value..."
ERR_XFORWARD_SYNTAX = "501 5.5.4 Syntax: XFORWARD attribute=value..."
ERR_XATTR_NAME = "501 5.5.4 Bad {verb} attribute name: {name}"
ERR_XATTR_VALUE = "501 5.5.4 Bad {verb} {attribute} syntax: {value}"

# Client limits counted by anvil (smtpd_client_*_limit)
ERR_TOO_MANY_CONNECTIONS = "421 4.7.0 {hostname} Error: too many connections from {addr}"
ERR_TOO_MANY_MESSAGES = "450 4.7.1 Error: too many messages from {addr}"
ERR_TOO_MANY_RECIPIENTS_FROM = "450 4.7.1 Error: too many recipients from {addr}"
ERR_TOO_MANY_NEW_TLS = "421 4.7.0 {hostname} Error: too many new TLS sessions from {addr}"
ERR_TOO_MANY_AUTH = "450 4.7.1 Error: too many AUTH commands from {addr}"

# Restrictions whose reply is not worded by the stage (verdict.rejection)
ERR_SENDER_NOT_OWNED = "553 5.7.1 <{sender}>: Sender address rejected: not owned by user {user}"
ERR_SENDER_NOT_LOGGED_IN = "553 5.7.1 <{sender}>: Sender address rejected: not logged in"
ERR_DOMAIN_LOOKUP = "450 4.1.{detail} <{address}>: {what} address rejected: Domain not found"

# Restriction texts (check.py) without their code: the code comes from main.cf.
ACCESS_DENIED_TEXT = "Access denied"
RELAY_DENIED_TEXT = "<{recipient}>: Relay access denied"
PIPELINING_TEXT = "{what}: {label} rejected: Improper use of SMTP command pipelining"
MULTI_RECIPIENT_BOUNCE_TEXT = "{what}: {label} rejected: Multi-recipient bounce"
USER_UNKNOWN_TEXT = "<{address}>: {what} address rejected: {reason}"
USER_UNKNOWN_REASON = "User unknown"
USER_UNKNOWN_IN_REASON = "User unknown in {table}"


def timeout(hostname: str) -> str:
    return f"421 4.4.2 {hostname} Error: timeout exceeded"


def too_many_errors(hostname: str) -> str:
    return f"421 4.7.0 {hostname} Error: too many errors"


def queued(queue_id: str) -> str:
    return f"250 2.0.0 Ok: queued as {queue_id}"


def bdat_ok(count: int) -> str:
    return f"250 2.0.0 Ok: {count} bytes"


def bdat_queued(total: int, queue_id: str) -> str:
    """bdat_queued - the reply to BDAT LAST: the bytes of every chunk, then the ID."""
    return f"250 2.0.0 Ok: {total} bytes queued as {queue_id}"


def ehlo_lines(hostname: str, features: list[str]) -> list[str]:
    """ehlo_lines - the multi-line EHLO reply: hostname first, then each feature."""
    lines = [hostname, *features]
    return [f"250-{line}" for line in lines[:-1]] + [f"250 {lines[-1]}"]


# -- log lines ----------------------------------------------------------------

def log_connect(peer: str) -> str:
    return f"connect from {peer}"


def log_client(queue_id: str, peer: str) -> str:
    return f"{queue_id}: client={peer}"


def log_long_request(peer: str, limit: int, line: bytes) -> str:
    """log_long_request - a command line cut at line_length_limit."""
    return f"{peer}: request longer than {limit}: {printable(line, 30)}..."


def log_bdat_too_big(queue_id: str, peer: str) -> str:
    return f"{queue_id or 'NOQUEUE'}: BDAT request from {peer} exceeds message size limit"


def log_null_bdat(queue_id: str, peer: str) -> str:
    return f"{queue_id or 'NOQUEUE'}: null BDAT request from {peer}"


def log_bdat_syntax(queue_id: str, peer: str, line: str) -> str:
    return f"{queue_id or 'NOQUEUE'}: malformed BDAT command syntax from {peer}: {line}"


def log_disconnect(peer: str, counts: str) -> str:
    return f"disconnect from {peer} {counts}".rstrip()


def log_event(event: str, stage: str, peer: str) -> str:
    """log_event - `lost connection after DATA from NAME[ADDR]` and friends."""
    return f"{event} after {stage} from {peer}"


def log_reject(queue_id: str, stage: str, peer: str, reply: str, sender: str | None,
               recipient: str | None, proto: str, helo: str | None) -> str:
    """log_reject - `NOQUEUE: reject: RCPT from NAME[ADDR]: REPLY; from=<> to=<>
    proto=ESMTP helo=<>`."""
    return log_action(queue_id, "reject", stage, peer, reply, sender, recipient, proto, helo)


def log_action(queue_id: str, action: str, stage: str, peer: str, text: str,
               sender: str | None, recipient: str | None, proto: str, helo: str | None) -> str:
    """log_action - the reject: line's shape for reject_warning:, hold:, discard:, warn: ..."""
    return " ".join([f"{queue_id or 'NOQUEUE'}: {action}: {stage} from {peer}: {text};",
                     *_envelope_fields(sender, recipient, proto, helo)])


def log_proxy(action: str, reply: str, sender: str | None, recipient: str | None,
              proto: str, helo: str | None) -> str:
    """log_proxy - the before-queue filter's verdict, in Postfix's shape (no
    queue ID, no client): `proxy-accept: END-OF-MESSAGE: 250 …; from=<> to=<>
    proto=ESMTP helo=<>` (or proxy-reject); a reply of several lines is one."""
    text = " ".join(reply.splitlines())
    return " ".join([f"{action}: END-OF-MESSAGE: {text};",
                     *_envelope_fields(sender, recipient, proto, helo)])


def _envelope_fields(sender: str | None, recipient: str | None, proto: str,
                     helo: str | None) -> list[str]:
    """_envelope_fields - `from=<> to=<> proto=ESMTP helo=<>` of a reject line."""
    parts = []
    if sender is not None:
        parts.append(f"from=<{sender}>")
    if recipient is not None:
        parts.append(f"to=<{recipient}>")
    parts.append(f"proto={proto}")
    if helo:
        parts.append(f"helo=<{helo}>")
    return parts


def log_pipelining(stage: str, peer: str, pending: bytes) -> str:
    return f"improper command pipelining after {stage} from {peer}: {printable(pending)}"


def printable(data: bytes, limit: int = 100) -> str:
    """printable - client bytes for a log line: C-style escapes, at most LIMIT bytes."""
    out = []
    for b in data[:limit]:
        if b == 0x0d:
            out.append("\\r")
        elif b == 0x0a:
            out.append("\\n")
        elif b == 0x09:
            out.append("\\t")
        elif 0x20 <= b < 0x7f and b != 0x5c:
            out.append(chr(b))
        else:
            out.append(f"\\{b:03o}")
    return "".join(out)


def with_footer(reply: str, footer: str, client_name: str, client_address: str,
                recipient: str = "") -> str:
    """with_footer - add_footer with the client's name and address and RECIPIENT."""
    return add_footer(reply, footer, {"client_address": client_address,
                                      "client_name": client_name, "recipient": recipient})


_FOOTER_NAME = re.compile(r"\$(?:\{([A-Za-z0-9_]+)\}|\(([A-Za-z0-9_]+)\)|([A-Za-z0-9_]+))")


def expand_footer(footer: str, values: dict[str, str]) -> str:
    """expand_footer - $name, ${name}, $(name) from VALUES; $localtime is now.

    A name VALUES lacks expands to nothing, as Postfix's smtpd does."""
    def one(m: re.Match) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        if name == "localtime" and name not in values:
            return time.strftime("%b %d %H:%M:%S")
        return values.get(name, "")
    return _FOOTER_NAME.sub(one, footer)


def add_footer(reply: str, footer: str, values: dict[str, str]) -> str:
    """add_footer - smtpd_reject_footer appended to a 4xx/5xx reply as more reply lines.

    "\\n" in the footer starts another line; a footer that starts with "\\c"
    continues the reply's last line. $client_address, $client_name,
    $client_port, $helo_name, $localtime, $recipient, $sender, $server_name
    are expanded from VALUES. The lines repeat the reply's code and enhanced
    status code, so the result is one multi-line reply."""
    if not footer or reply[:1] not in "45":
        return reply
    footer = expand_footer(footer, values)
    code, _, rest = reply.partition(" ")
    dsn = rest.split(" ", 1)[0] if rest[:1] in "245" and "." in rest.split(" ", 1)[0] else ""
    prefix = f"{code} {dsn} " if dsn else f"{code} "
    lines = reply.split("\r\n")
    if footer.startswith("\\c"):
        parts = footer[2:].split("\\n")
        lines[-1] += parts[0]
        parts = parts[1:]
    else:
        parts = footer.split("\\n")
    lines += [prefix + part for part in parts]
    return "\r\n".join([line.replace(f"{code} ", f"{code}-", 1) for line in lines[:-1]] +
                       lines[-1:])
