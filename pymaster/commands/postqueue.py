"""postqueue: list and flush the mail queue, as Postfix's postqueue(1).

    postqueue [-v] [-c config_dir] -p      the mailq listing
    postqueue [-v] [-c config_dir] -j      one JSON object per message
    postqueue [-v] [-c config_dir] -f      deliver everything queued now
    postqueue [-v] [-c config_dir] -s site deliver deferred mail for SITE now
    postqueue [-v] [-c config_dir] -i id   deliver deferred message ID now

The listing (pymaster.mail.queuelist) reads the spool directly when it may (root,
the mail_owner), so it works while the mail system is down. Anyone else,
if authorized_mailq_users allows, gets the same listing from the showq
service (`public/showq`, running as the mail_owner): "Queue report
unavailable - mail system is down" (exit 69) when it is not running.

-f wakes qmgr with {"op": "flush"}. -s and -i ask the fast flush service
(services/flush.py) when master.cf has one: -s SITE delivers what SITE's log
lists, and a SITE that fast_flush_domains does not list is an error
('Flush service is not configured for destination "SITE"', exit 69).
Without the service they move the matching deferred files to incoming
themselves and wake qmgr, or, for a user who cannot write the spool, ask
qmgr to do it ({"op": "flush", "site": SITE} / {"op": "flush", "queue_id":
ID}). All three need the mail system up: "Cannot flush mail queue - mail
system is down", exit 69, otherwise.

Interface: main(argv=None) -> exit status; user_allowed(cfg, param, uid);
showq_entries(cfg) -> [Entry]; the listing itself is pymaster.mail.queuelist's
(list_queue, format_listing, format_json, flush_ids, deferred_for_site are
re-exported here for older callers).
"""

from __future__ import annotations

import getopt
import json
import os
import pwd
import sys

from pymaster.commands import getopt_message
from pymaster.mail import endpoints, flush_client, queue
from pymaster.mail.config import Config, ConfigError, load_config
from pymaster.mail.pidfile import master_running
from pymaster.mail.queuelist import (  # noqa: F401
    Entry,
    Rcpt,
    deferred_for_site,
    flush_ids,
    format_entry,
    format_json,
    format_listing,
    list_queue,
    read_entry,
    spool_listing,
)
from pymaster.util import ipc, log
from pymaster.util.tables import TableError, open_table

EX_USAGE = 64
EX_UNAVAILABLE = 69
EX_NOPERM = 77
SHOWQ_TIMEOUT = 600.0       # a queue of a million files takes a while
USAGE = "usage: postqueue -f | postqueue -i queueid | postqueue -j | " \
        "postqueue -p | postqueue -s site"


# -- who may ---------------------------------------------------------------------------

def user_allowed(cfg: Config, param: str, uid: int) -> bool:
    """user_allowed - whether UID's login name matches the user list PARAM.

    Entries are names, `!name` (excluded) or type:table (a table that has
    the name; `static:anyone` has everybody), searched in order, first match
    wins; no match means no."""
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
    return master_running(cfg.get("queue_directory"))


def wake_qmgr(cfg: Config, header: dict) -> None:
    ipc.trigger(endpoints.endpoint(cfg, "qmgr"), header)


# -- the command ------------------------------------------------------------------------

def _parse(argv: list[str]) -> tuple[str, str, str | None]:
    try:
        opts, args = getopt.getopt(argv, "c:fi:jps:v")
    except getopt.GetoptError as e:
        # Postfix: glibc's message, then the usage line; status EX_UNAVAILABLE.
        sys.stderr.write(f"postqueue: {getopt_message(e)}\n")
        log.fatal(USAGE, EX_UNAVAILABLE)
    mode, arg, config_dir = "", "", None
    for opt, value in opts:
        if opt == "-c":
            config_dir = value
        elif opt in ("-f", "-i", "-j", "-p", "-s"):
            if mode:
                log.fatal("specify only one of -f, -i, -j, -p and -s", EX_USAGE)
            mode, arg = opt[1], value
    if args:
        log.fatal(USAGE, EX_UNAVAILABLE)     # Postfix: the usage line alone, status 69
    if not mode:
        log.fatal(USAGE, EX_UNAVAILABLE)
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
        text = spool_listing(cfg, as_json=mode == "j")
    except PermissionError:
        entries = showq_entries(cfg)
        if mode == "p":
            text = format_listing(entries, cfg)
        else:
            text = "".join([format_json(e) + "\n" for e in entries])
    sys.stdout.write(text)
    sys.stdout.flush()
    return 0


def showq_entries(cfg: Config) -> list[Entry]:
    """showq_entries - the listing from the showq service (for users who
    cannot read the spool)."""
    name = endpoints.service_name(cfg, "showq")
    if not mail_system_up(cfg) or not os.path.exists(os.path.join("public", name)):
        log.fatal("Queue report unavailable - mail system is down", EX_UNAVAILABLE)
    client = ipc.Client(ipc.endpoint("public", name), timeout=SHOWQ_TIMEOUT)
    try:
        header, payload = client.call({"op": "list"})
    except ipc.IpcError as e:
        log.fatal(f"Queue report unavailable - {e}", EX_UNAVAILABLE)
    finally:
        client.close()
    if header.get("status") != "ok":
        log.fatal(f"Queue report unavailable - {header.get('reason', 'showq service failure')}",
                  EX_UNAVAILABLE)
    return [Entry.from_dict(json.loads(line)) for frame in payload
            for line in bytes(frame).splitlines() if line]


def flush_service(cfg: Config, mode: str, arg: str) -> int:
    """flush_service - -s SITE or -i ID through the fast flush service."""
    client = flush_client.FlushClient(cfg)
    if mode == "i":
        status = client.send_file(arg)
    else:
        if not flush_client.valid_site(arg):
            more = "..." if len(arg) > 100 else ""
            log.fatal(f'Cannot flush mail queue - invalid destination: "{arg[:100]}{more}"',
                      EX_USAGE)
        status = client.send_site(arg)
    if status == flush_client.OK:
        return 0
    if status == flush_client.DENY:
        log.fatal(f'Flush service is not configured for destination "{arg}"', EX_UNAVAILABLE)
    if status == flush_client.BAD:
        log.fatal(f'Cannot flush mail queue - invalid destination: "{arg[:100]}"', EX_USAGE)
    log.fatal("Cannot flush mail queue - mail system is down", EX_UNAVAILABLE)


def flush(cfg: Config, mode: str, arg: str) -> int:
    check_user(cfg, "authorized_flush_users", "flush the mail queue")
    if not mail_system_up(cfg):
        log.fatal("Cannot flush mail queue - mail system is down", EX_UNAVAILABLE)
    if mode == "i" and not queue.is_queue_id(arg):
        log.fatal(f"bad queue ID: {arg}", EX_USAGE)
    if mode == "f":
        wake_qmgr(cfg, {"op": "flush"})
    elif flush_client.available(cfg):
        return flush_service(cfg, mode, arg)
    elif not os.access("deferred", os.W_OK | os.X_OK):
        # Not allowed to move spool files: qmgr (the mail_owner) does it.
        wake_qmgr(cfg, {"op": "flush", "queue_id": arg} if mode == "i"
                  else {"op": "flush", "site": arg})
    else:
        flush_ids([arg] if mode == "i" else deferred_for_site(arg))
        wake_qmgr(cfg, {"op": "wakeup"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
