"""postqueue: list and flush the mail queue, as Postfix's postqueue(1).

    postqueue [-v] [-c config_dir] -p      the mailq listing
    postqueue [-v] [-c config_dir] -j      one JSON object per message
    postqueue [-v] [-c config_dir] -f      deliver everything queued now
    postqueue [-v] [-c config_dir] -s site deliver deferred mail for SITE now
    postqueue [-v] [-c config_dir] -i id   deliver deferred message ID now

The listing reads the spool directly (maildrop, incoming, active, deferred,
hold; each in arrival order), so it works while the mail system is down. It
needs read access to the queue directories: root or the mail_owner. A
showq service through which unprivileged users can list the queue is not
there yet; they get a clear fatal error instead.

-p layout (the Sendmail mailq shape Postfix keeps):

    -Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------
    4jcNtb0Nd2zJF6N*   1234 Sat Nov 28 20:03:44  sender@example.com
                                             rcpt@example.org

    -- 2 Kbytes in 1 Request.

`*` marks a message in the active queue, `!` one on hold; a recipient that
was deferred is listed under its `(reason)` from the defer log.

-f wakes qmgr with {"op": "flush"}; -s and -i move the matching deferred
files to incoming (as Postfix's flush service does) and wake qmgr. All
three need the mail system up: "Cannot flush mail queue - mail system is
down", exit 69, otherwise.

Interface: main(argv=None) -> exit status; list_queue(cfg) -> [Entry];
format_listing(entries, cfg) -> str; format_json(entry) -> str
"""

from __future__ import annotations

import getopt
import json
import os
import pwd
import sys
import time
from dataclasses import dataclass, field

from pymaster import ipc, log, queue, records
from pymaster.config import Config, ConfigError, load_config
from pymaster.delivery import read_status_log

EX_USAGE = 64
EX_UNAVAILABLE = 69
EX_NOPERM = 77
LIST_QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")
STATUS_MARK = {"active": "*", "hold": "!"}
HEADING = "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------"
RCPT_INDENT = " " * 41
REASON_WIDTH = 76
USAGE = "usage: postqueue -f | postqueue -i queueid | postqueue -j | " \
        "postqueue -p | postqueue -s site"


@dataclass
class Rcpt:
    address: str
    orig: str = ""
    reason: str = ""


@dataclass
class Entry:
    """One message as the listing shows it."""
    queue_name: str
    queue_id: str
    arrival_time: float
    size: int
    file_size: int
    sender: str
    forced_expire: bool = False
    recipients: list[Rcpt] = field(default_factory=list)
    unreadable_uid: int | None = None


# -- reading the queue ----------------------------------------------------------

def list_queue(queues=LIST_QUEUES) -> list[Entry]:
    """list_queue - every complete, readable message in QUEUES (cwd = spool)."""
    entries = []
    for name in queues:
        for queue_id, path in sorted(queue.scan(name)):
            entry = read_entry(name, queue_id, path)
            if entry is not None:
                entries.append(entry)
    return entries


def read_entry(queue_name: str, queue_id: str, path: str) -> Entry | None:
    """read_entry - the listing entry for one file; None when it is not ready."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    if not st.st_mode & 0o100:
        return None                     # still being written
    try:
        msg = records.read_message(path)
    except FileNotFoundError:
        return None                     # delivered while we looked
    except PermissionError:
        if queue_name != "maildrop":
            raise
        return Entry(queue_name, queue_id, st.st_mtime, st.st_size, st.st_size, "",
                     unreadable_uid=st.st_uid)
    except records.CorruptQueueFile as e:
        log.warning(f"{queue_name}/{queue_id}: {e.reason}")
        return None
    entry = Entry(queue_name, queue_id, msg.arrival_time, msg.size or st.st_size,
                  st.st_size, msg.sender,
                  forced_expire=msg.attrs.get("forced_expire", "") not in ("", "0", "no"))
    reasons = _defer_reasons(queue_id)
    for r in msg.pending():
        reason = reasons.get(r.offset) or reasons.get(r.address, "")
        entry.recipients.append(Rcpt(r.address, r.orig, reason))
    return entry


def _defer_reasons(queue_id: str) -> dict:
    """_defer_reasons - the latest reason per recipient offset and address."""
    reasons: dict = {}
    for item in read_status_log(queue.defer_log_path(queue_id)):
        reason = item.get("reason", "")
        if item.get("offset", "").lstrip("-").isdigit():
            reasons[int(item["offset"])] = reason
        if item.get("recipient"):
            reasons[item["recipient"]] = reason
    return reasons


# -- formatting -------------------------------------------------------------------

def format_entry(e: Entry, empty_sender: str) -> list[str]:
    """format_entry - the lines of one message in the -p listing."""
    mark = STATUS_MARK.get(e.queue_name, " ")
    stamp = time.asctime(time.localtime(e.arrival_time))[:20]
    if e.unreadable_uid is not None:
        return [f"{e.queue_id:<10}{mark}{e.size:>8} {stamp} "
                f"(maildrop queue, sender UID {e.unreadable_uid})"]
    lines = [f"{e.queue_id:<10}{mark}{e.size:>8} {stamp} {e.sender or empty_sender}"]
    # Deferred recipients first, each group under its reason, then the rest.
    groups: dict[str, list[str]] = {}
    for r in e.recipients:
        if r.reason:
            groups.setdefault(r.reason, []).append(r.address)
    for reason, addresses in groups.items():
        pad = max(0, REASON_WIDTH - len(reason))
        lines.append(" " * pad + f"({reason})")
        lines.extend(RCPT_INDENT + a for a in addresses)
    lines.extend(RCPT_INDENT + r.address for r in e.recipients if not r.reason)
    return lines


def format_listing(entries: list[Entry], cfg: Config) -> str:
    """format_listing - the whole mailq output."""
    if not entries:
        return "Mail queue is empty\n"
    empty_sender = cfg.get("empty_address_recipient") or "MAILER-DAEMON"
    blocks = ["\n".join(format_entry(e, empty_sender)) for e in entries]
    kbytes = sum(e.file_size for e in entries) // 1024
    n = len(entries)
    return (HEADING + "\n" + "\n\n".join(blocks) + "\n"
            + f"\n-- {kbytes} Kbytes in {n} Request{'' if n == 1 else 's'}.\n")


def format_json(e: Entry) -> str:
    """format_json - one message as postqueue -j prints it."""
    rcpts = []
    for r in e.recipients:
        item = {"address": r.address}
        if r.orig and r.orig != r.address:
            item["orig_address"] = r.orig
        if r.reason:
            item["delay_reason"] = r.reason
        rcpts.append(item)
    obj = {"queue_name": e.queue_name, "queue_id": e.queue_id,
           "arrival_time": int(e.arrival_time), "message_size": e.size,
           "forced_expire": e.forced_expire, "sender": e.sender, "recipients": rcpts}
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


# -- who may ---------------------------------------------------------------------------

def user_allowed(cfg: Config, param: str, uid: int) -> bool:
    """user_allowed - whether UID's login name matches the user list PARAM.

    Entries are names, `!name` (excluded) or type:table (a table that has
    the name; `static:anyone` has everybody), searched in order, first match
    wins; no match means no."""
    from pymaster.tables import TableError, open_table
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    for item in cfg.list(param):
        negate = item.startswith("!")
        item = item.lstrip("!")
        if ":" in item:
            try:
                matched = open_table(item, cfg).lookup(user) is not None
            except TableError as e:
                log.fatal(f"{param}: {e}", EX_UNAVAILABLE)
        else:
            matched = item == user
        if matched:
            return not negate
    return False


def check_user(cfg: Config, param: str, what: str) -> None:
    """check_user - refuse WHAT unless root, mail_owner or listed in PARAM."""
    uid = os.getuid()
    if uid == 0 or _is_mail_owner(cfg, uid) or user_allowed(cfg, param, uid):
        return
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = str(uid)
    log.fatal(f"User {name}({uid}) is not allowed to {what}", EX_NOPERM)


def _is_mail_owner(cfg: Config, uid: int) -> bool:
    try:
        return pwd.getpwnam(cfg.get("mail_owner")).pw_uid == uid
    except KeyError:
        return False


# -- flushing -----------------------------------------------------------------------

def mail_system_up(cfg: Config) -> bool:
    from pymaster.commands.postdrop import master_running
    return master_running(cfg.get("queue_directory"))


def wake_qmgr(cfg: Config, header: dict) -> None:
    ipc.trigger(ipc.endpoint("public", cfg.get("queue_service_name") or "qmgr"), header)


def flush_ids(queue_ids: list[str]) -> int:
    """flush_ids - move deferred QUEUE_IDS to incoming; how many moved."""
    moved = 0
    for queue_id in queue_ids:
        try:
            queue.move(queue_id, "deferred", "incoming")
            moved += 1
        except FileNotFoundError:
            pass
    return moved


def deferred_for_site(site: str) -> list[str]:
    """deferred_for_site - deferred messages with a pending recipient at SITE."""
    site = site.lower().strip("[]")
    found = []
    for queue_id, path in queue.scan("deferred"):
        try:
            msg = records.read_message(path)
        except (OSError, records.CorruptQueueFile):
            continue
        domains = {r.address.rpartition("@")[2].lower().strip("[]") for r in msg.pending()}
        if site in domains:
            found.append(queue_id)
    return found


# -- the command ------------------------------------------------------------------------

def _parse(argv: list[str]) -> tuple[str, str, str | None]:
    try:
        opts, args = getopt.getopt(argv, "c:fi:jps:v")
    except getopt.GetoptError as e:
        log.fatal(f"{e.msg}\n{USAGE}", EX_USAGE)
    mode, arg, config_dir = "", "", None
    for opt, value in opts:
        if opt == "-c":
            config_dir = value
        elif opt in ("-f", "-i", "-j", "-p", "-s"):
            if mode:
                log.fatal("specify only one of -f, -i, -j, -p and -s", EX_USAGE)
            mode, arg = opt[1], value
    if args:
        log.fatal(f"unexpected argument: {args[0]}\n{USAGE}", EX_USAGE)
    if not mode:
        log.fatal(f"no action specified\n{USAGE}", EX_USAGE)
    return mode, arg, config_dir


def main(argv: list[str] | None = None, program: str = "postqueue") -> int:
    log.setup(program, stderr=True)
    mode, arg, config_dir = _parse(sys.argv[1:] if argv is None else argv)
    try:
        cfg = load_config(config_dir)
    except ConfigError as e:
        log.fatal(str(e))
    log.setup(program, cfg, stderr=True)
    try:
        queue.enter_spool(cfg)
    except OSError as e:
        log.fatal(f"chdir {cfg.get('queue_directory')}: {e.strerror}")
    if mode in ("p", "j"):
        return show(cfg, mode)
    return flush(cfg, mode, arg)


def show(cfg: Config, mode: str) -> int:
    check_user(cfg, "authorized_mailq_users", "view the mail queue")
    try:
        entries = list_queue()
    except PermissionError:
        log.fatal("Queue report unavailable - no permission to read the queue "
                  "directory (run as root or the mail_owner)", EX_NOPERM)
    if mode == "p":
        sys.stdout.write(format_listing(entries, cfg))
    else:
        for e in entries:
            sys.stdout.write(format_json(e) + "\n")
    sys.stdout.flush()
    return 0


def flush(cfg: Config, mode: str, arg: str) -> int:
    check_user(cfg, "authorized_flush_users", "flush the mail queue")
    if not mail_system_up(cfg):
        log.fatal("Cannot flush mail queue - mail system is down", EX_UNAVAILABLE)
    if mode == "i":
        if not queue.is_queue_id(arg):
            log.fatal(f"bad queue ID: {arg}", EX_USAGE)
        flush_ids([arg])
        wake_qmgr(cfg, {"op": "wakeup"})
    elif mode == "s":
        flush_ids(deferred_for_site(arg))
        wake_qmgr(cfg, {"op": "wakeup"})
    else:
        wake_qmgr(cfg, {"op": "flush"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
