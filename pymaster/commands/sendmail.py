"""sendmail: the Sendmail-compatible submission interface, as Postfix's sendmail(1).

    sendmail [options] [recipient ...]

Submission (the default, -bm): the message is read from standard input (a
line with only `.` ends it unless -i/-oi; CRLF becomes LF; a leading mbox
`From ` line is dropped) and written as one queue file into maildrop/
(directly when this process may write there, else through `postdrop`), then
pickup is woken. pickup hands it to cleanup, which qualifies addresses
(rewrite_context=local), adds missing headers and, for -t, takes recipients
from To:/Cc:/Bcc: (Resent- forms when present) and removes Bcc:. When the
mail system is down the file waits in maildrop.

Options, as Postfix's sendmail:
    -t              recipients from the headers, added to any on the command line
    -i, -oi         a lone `.` does not end the message
    -f sender, -r sender   envelope sender (`<>` for the null sender)
    -F fullname     the sender's full name (else $NAME, else the password file)
    -N dsn          DSN NOTIFY: never, or a list of success, delay, failure
    -R ret          DSN RET: full or hdrs
    -V envid        DSN ENVID
    -XV, -XVxy      VERP (pymaster.mail.verp): each recipient gets its own envelope
                    sender, with default_verp_delimiters or the two characters xy;
                    `-V` before another option or `-Vxy` is taken for -XV (as
                    Postfix, with a warning)
    -B type         body type: 7BIT or 8BITMIME
    -C dir, -c dir  the configuration (main.cf or its directory)
    -bp             mailq;  -bi, -I  newaliases;  -q  postqueue -f
    -qR site / -qI id      postqueue -s site / -i id
    -bd, -bD, -bl   postfix start
    -bs             SMTP on standard input and output: runs smtpd in stand-alone
                    mode (`smtpd -S`, client localhost[127.0.0.1]); each
                    accepted message goes into maildrop like any submission
    -bv             address verification: no message is read; the recipients
                    are queued with trace_flags=verify, every delivery agent
                    only reports what it would do, and the sender gets a
                    "Mail Delivery Status Report" (deliverable/undeliverable)
    -A -G -h -L -m -n -o7 -o8 -om -U -v -x -X …  accepted and ignored
An unknown option is a usage error, as in Postfix: the option message (twice,
as Postfix's two passes over the arguments print it), then `sendmail: fatal:
usage: sendmail [options]`, exit 75. A bad -N or -R value is a warning and
ignored; a bad -B value or an unknown -q form is fatal.

Errors (on standard error and in the log, `sendmail: fatal: …`) exit with
Postfix's codes: 75 (EX_TEMPFAIL) for usage errors, missing recipients
(`USER(UID): No recipient addresses found in message header`) and a queue
file that cannot be written; 69 unavailable; 77 not allowed to submit.

Interface: main(argv=None) -> exit status; parse_args(argv) -> Options;
read_message(stream, dot_ends) -> bytes; header_recipients(content) -> list[str]
"""

from __future__ import annotations

import email.utils
import os
import pwd
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import BinaryIO

from pymaster.commands import newaliases, postqueue
from pymaster.commands.postqueue import user_allowed
from pymaster.mail import maildrop, queue, records, verp
from pymaster.mail.config import Config, ConfigError, load_config
from pymaster.util import log

EX_USAGE = 64
EX_DATAERR = 65
EX_UNAVAILABLE = 69
EX_TEMPFAIL = 75
EX_NOPERM = 77
# Options that take a value (in the same word or the next one).
WITH_VALUE = set("ABCFLNORVXbcefhopqr")
# Every option letter Postfix's sendmail knows; any other is a usage error.
KNOWN = WITH_VALUE | set("GIUimntvx")
NOTIFY_WORDS = {"never", "success", "delay", "failure"}
RET_WORDS = {"FULL", "HDRS"}
BODY_WORDS = {"7BIT", "8BITMIME"}


@dataclass
class Options:
    mode: str = "m"                 # the -b letter; "q" for -q runs
    extract: bool = False
    dot_ends: bool = True
    sender: str | None = None
    full_name: str | None = None
    notify: str = ""
    ret: str = ""
    envid: str = ""
    verp: str | None = None         # -XV: "" (the default delimiters) or the two given
    body: str = ""
    config_dir: str | None = None
    queue_arg: str = ""
    verbose: int = 0
    recipients: list[str] = field(default_factory=list)


class UsageError(Exception):
    """A bad command line: the message glibc's getopt prints, then the usage line."""


class NoRecipients(Exception):
    """Neither the command line nor (with -t) the header names a recipient."""


# -- arguments ---------------------------------------------------------------------

def parse_args(argv: list[str]) -> Options:
    """parse_args - Sendmail options, then recipients; unknown letters ignored."""
    opts = Options()
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "--":
            i += 1
            break
        if not word.startswith("-") or word == "-":
            break
        j = 1
        while j < len(word):
            letter = word[j]
            if letter not in KNOWN:
                raise UsageError(f"invalid option -- '{letter}'")
            if letter in WITH_VALUE:
                value = word[j + 1:]
                if not value and letter != "q":
                    i += 1
                    if i >= len(argv):
                        raise UsageError(f"option requires an argument -- '{letter}'")
                    value = argv[i]
                    if letter == "V" and value.startswith("-"):
                        i -= 1          # -V then another option: the old VERP form
                        value = ""
                _option(opts, letter, value)
                break
            _flag(opts, letter)
            j += 1
        i += 1
    opts.recipients.extend(argv[i:])
    return opts


def _old_verp(value: str) -> bool:
    """_old_verp - whether a -V value is the VERP option of old (now -XV), with a warning.

    As Postfix: no value (the next word is an option) or a two-character
    one means VERP; any other value is DSN's envelope ID."""
    if len(value) in (0, 2):
        log.warning(f"option -V{value} is deprecated with Postfix 2.3; "
                    f"specify -XV{value} instead")
        return True
    return False


def _flag(opts: Options, letter: str) -> None:
    if letter == "t":
        opts.extract = True
    elif letter == "i":
        opts.dot_ends = False
    elif letter == "I":
        opts.mode = "i"
    elif letter == "v":
        opts.verbose += 1
    # G, U, m, n, x and anything unknown: accepted and ignored.


def _option(opts: Options, letter: str, value: str) -> None:
    if letter in ("f", "r"):
        opts.sender = value
    elif letter == "F":
        opts.full_name = value
    elif letter == "N":
        opts.notify = _notify(value)
    elif letter == "R":
        if value.upper() in RET_WORDS:
            opts.ret = value.upper()
        else:
            log.warning("bad -R option value -- ignored")
    elif letter == "V":
        if _old_verp(value):
            opts.verp = value
        else:
            opts.envid = value
    elif letter == "X" and value.startswith("V"):
        opts.verp = value[1:]
    elif letter == "B":
        if value.upper() not in BODY_WORDS:
            log.fatal("-B option needs 8BITMIME or 7BIT", EX_TEMPFAIL)
        opts.body = value.upper()
    elif letter in ("C", "c"):
        opts.config_dir = os.path.dirname(value) if value.endswith(".cf") else value
    elif letter == "b":
        opts.mode = value[:1] or "m"
    elif letter == "o":
        if value.startswith("i"):
            opts.dot_ends = False
        elif value.startswith("b"):
            opts.body = value[1:].upper()
    elif letter == "q":
        _queue_option(opts, value)
    # L label, O option, e, h hop count, p protocol: ignored.


def _queue_option(opts: Options, value: str) -> None:
    """_queue_option - -q (flush), -qR site, -qI id; -q TIME (a daemon's
    interval) is accepted and does nothing, as in Postfix."""
    if value and value[0] not in "RI" and not value[0].isdigit():
        log.fatal(f"-q{value[0]} is not implemented", EX_TEMPFAIL)
    opts.mode, opts.queue_arg = "q", value


def _notify(value: str) -> str:
    """_notify - the -N value as DSN NOTIFY words; a bad one is warned about
    and ignored, as Postfix's sendmail does."""
    words = [w.strip().lower() for w in value.split(",") if w.strip()]
    for word in words:
        if word not in NOTIFY_WORDS:
            log.warning(f'unknown DSN NOTIFY command value "{word}" in "{value}"')
    if not words or any(w not in NOTIFY_WORDS for w in words) \
            or ("never" in words and len(words) > 1):
        log.warning("bad -N option value -- ignored")
        return ""
    return ",".join(w.upper() for w in words)


# -- the message ----------------------------------------------------------------------

def read_message(stream: BinaryIO, dot_ends: bool) -> bytes:
    """read_message - standard input as queue content: LF line ends, final newline."""
    out = bytearray()
    first = True
    for line in stream:
        if line.endswith(b"\r\n"):
            line = line[:-2] + b"\n"
        if first:
            first = False
            if line.startswith(b"From "):
                continue            # an mbox separator, not a header
        if dot_ends and line.rstrip(b"\n") == b".":
            break
        out += line
    if out and not out.endswith(b"\n"):
        out += b"\n"
    return bytes(out)


def _header_block(content: bytes) -> list[tuple[str, str]]:
    """_header_block - (lowercase name, unfolded value) of each header."""
    headers: list[tuple[str, str]] = []
    for raw in content.split(b"\n"):
        line = raw.decode("utf-8", "surrogateescape")
        if not line:
            break
        if line[0] in " \t":
            if headers:
                name, value = headers[-1]
                headers[-1] = (name, value + " " + line.strip())
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or " " in name:
            break
        headers.append((name.strip().lower(), value.strip()))
    return headers


def header_recipients(content: bytes) -> list[str]:
    """header_recipients - the addresses sendmail -t would take from the headers."""
    headers = _header_block(content)
    resent = any(n in ("resent-to", "resent-cc", "resent-bcc") for n, _ in headers)
    names = ("resent-to", "resent-cc", "resent-bcc") if resent else ("to", "cc", "bcc")
    values = [v for n, v in headers if n in names]
    return [addr for _, addr in email.utils.getaddresses(values) if addr]


def argument_recipients(args: list[str]) -> list[str]:
    """argument_recipients - command-line recipients; one word may list several."""
    out = []
    for arg in args:
        found = [addr for _, addr in email.utils.getaddresses([arg]) if addr]
        out.extend(found or [arg])
    return out


def _login_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"#{uid}"


def _full_name(opts: Options, uid: int) -> str:
    if opts.full_name is not None:
        return opts.full_name
    if os.environ.get("NAME"):
        return os.environ["NAME"]
    try:
        return pwd.getpwuid(uid).pw_gecos.split(",")[0]
    except KeyError:
        return ""


def _sender(opts: Options, uid: int) -> str:
    if opts.sender is None:
        return _login_name(uid)
    sender = opts.sender.strip()
    if sender.startswith("<") and sender.endswith(">"):
        sender = sender[1:-1]
    return sender


def build_envelope(opts: Options, content: bytes, uid: int) -> tuple[str, list, dict]:
    """build_envelope - (sender, recipients, attrs) for the maildrop file."""
    rcpts = argument_recipients(opts.recipients)
    if opts.extract:
        if not rcpts and not header_recipients(content):
            raise NoRecipients("No recipient addresses found in message header")
    elif not rcpts:
        raise NoRecipients("Recipient addresses must be specified on the command line "
                           "or via the -t option")
    attrs = {"uid": str(uid), "rewrite_context": "local"}
    for name, value in (("full_name", _full_name(opts, uid)), ("envid", opts.envid),
                        ("ret", opts.ret), ("body", opts.body)):
        if value:
            attrs[name] = value
    if opts.extract:
        attrs["cleanup_flags"] = "extract"
    if opts.verp:
        attrs[verp.ATTR] = opts.verp
    if opts.mode == "v":
        # -bv: verify only; the agents deliver nothing (pymaster.mail.delivery).
        attrs["trace_flags"] = "verify"
    elif opts.verbose:
        # -v: a report of the first delivery attempt (the trace service).
        attrs["trace_flags"] = "record"
    recipients = [records.Recipient(r, notify=opts.notify) for r in rcpts]
    return _sender(opts, uid), recipients, attrs


# -- submission ------------------------------------------------------------------------

def submit(cfg: Config, opts: Options, content: bytes) -> str:
    """submit - the message into maildrop, pickup woken; the maildrop file's ID."""
    uid = os.getuid()
    sender, recipients, attrs = build_envelope(opts, content, uid)
    now = time.time()
    if os.access("maildrop", os.W_OK | os.X_OK):
        queue_id = maildrop.write_maildrop(now, sender, recipients, attrs, content)
        maildrop.wake_pickup(cfg)
        return queue_id
    return _via_postdrop(cfg, opts, now, sender, recipients, attrs, content)


def _via_postdrop(cfg: Config, opts: Options, now: float, sender: str, recipients: list,
                  attrs: dict, content: bytes) -> str:
    """_via_postdrop - an unprivileged user: the set-group-ID postdrop writes it.

    The wrapper that makes postdrop set-group-ID (install/setgid-wrapper.c)
    lets a user name only the default configuration directory."""
    data = records.encode_message(now, sender, recipients, attrs, content)
    argv = [os.path.join(cfg.get("command_directory"), "postdrop")]
    if opts.config_dir:
        argv += ["-c", cfg.config_dir]
    proc = subprocess.run(argv, input=data)
    if proc.returncode != 0:
        sys.exit(proc.returncode if proc.returncode > 0 else EX_TEMPFAIL)
    return ""


def _run_mode(opts: Options, cfg: Config) -> int:
    """_run_mode - the -b and -q modes that hand over to another command."""
    cdir = ["-c", cfg.config_dir]
    if opts.mode == "p":
        return postqueue.main(cdir + ["-p"], program="mailq")
    if opts.mode == "i":
        return newaliases.main(["-C", cfg.config_dir]) or 0
    if opts.mode == "q":
        arg = opts.queue_arg
        if arg[:1].isdigit():
            return 0                  # a queue run interval: only a daemon has one
        if arg.startswith("R"):
            return postqueue.main(cdir + ["-s", arg[1:]])
        if arg.startswith("I"):
            return postqueue.main(cdir + ["-i", arg[1:]])
        return postqueue.main(cdir + ["-f"])
    if opts.mode in ("d", "D", "l"):
        postfix = os.path.join(cfg.get("command_directory"), "postfix")
        return subprocess.run([postfix, "-c", cfg.config_dir, "start"]).returncode
    if opts.mode == "s":
        return smtp_on_stdio(cfg)
    if opts.mode in ("h", "H"):
        return 0                      # Sendmail's host status: nothing to show
    log.fatal(f"unsupported: -b{opts.mode}", EX_TEMPFAIL)


def main(argv: list[str] | None = None) -> int:
    log.setup("sendmail", stderr=True)
    try:
        opts = parse_args(sys.argv[1:] if argv is None else argv)
    except UsageError as e:
        # Postfix's sendmail reads its arguments twice; getopt complains each time.
        sys.stderr.write(f"sendmail: {e}\nsendmail: {e}\n")
        log.fatal("usage: sendmail [options]", EX_TEMPFAIL)
    try:
        cfg = load_config(opts.config_dir)
    except ConfigError as e:
        log.fatal(str(e), EX_TEMPFAIL)
    log.setup("sendmail", cfg, verbose=opts.verbose, stderr=True)
    if why := verp.config_error(cfg):
        log.fatal(why, EX_TEMPFAIL)
    if opts.verp is not None:
        _check_verp(opts, cfg)
    if opts.mode not in ("m", "v"):
        return _run_mode(opts, cfg)
    try:
        queue.enter_spool(cfg)
    except OSError as e:
        log.fatal(f"chdir {cfg.get('queue_directory')}: {e.strerror}", EX_TEMPFAIL)
    if not user_allowed(cfg, "authorized_submit_users", os.getuid()):
        log.fatal(f"User {_login_name(os.getuid())}({os.getuid()}) is not allowed to submit mail",
                  EX_NOPERM)
    # -bv collects no message: the report is about the addresses alone.
    content = b"" if opts.mode == "v" else read_message(sys.stdin.buffer, opts.dot_ends)
    limit = cfg.int("message_size_limit")
    if limit and len(content) > limit:
        log.fatal(f"{_sender(opts, os.getuid())}({os.getuid()}): message file too big",
                  EX_UNAVAILABLE)
    try:
        submit(cfg, opts, content)
    except NoRecipients as e:
        log.fatal(f"{_login_name(os.getuid())}({os.getuid()}): {e}", EX_TEMPFAIL)
    except OSError as e:
        log.fatal(f"create file maildrop: {e.strerror or e}", EX_TEMPFAIL)
    return 0


def _check_verp(opts: Options, cfg: Config) -> None:
    """_check_verp - -XV's delimiters (the default for none) and a sender to vary."""
    opts.verp = opts.verp or cfg.get("default_verp_delimiters")
    filter_chars = cfg.get("verp_delimiter_filter")
    if verp.verify(opts.verp, filter_chars):
        log.fatal(f"-V requires two characters from {filter_chars}", EX_TEMPFAIL)
    sender = _sender(opts, os.getuid())
    if not sender:
        log.fatal(f"{sender}({os.getuid()}): -V option requires non-null sender address",
                  EX_TEMPFAIL)


# -- sendmail -bs -----------------------------------------------------------------------

def smtp_on_stdio(cfg: Config) -> int:
    """smtp_on_stdio - sendmail -bs: run smtpd in stand-alone mode on our stdio."""
    smtpd = os.path.join(cfg.get("daemon_directory"), "smtpd")
    env = dict(os.environ, MAIL_CONFIG=cfg.config_dir)
    try:
        os.execve(sys.executable, [sys.executable, smtpd, "-S"], env)
    except OSError as e:
        log.fatal(f"execvp {smtpd}: {e.strerror}", EX_UNAVAILABLE)

if __name__ == "__main__":
    sys.exit(main())
