"""postdrop: put a locally submitted message into the maildrop queue.

    postdrop [-rv] [-c config_dir]

Standard input is one whole queue file in pymaster's record format (see
pymaster.records), as `sendmail` builds it. postdrop checks that it parses,
records the submitting user's real uid (attribute `uid`, whatever the input
said), writes it to `maildrop/` with the usual fsync and completion mark, and
wakes pickup (`public/pickup`). When the mail system is down the file simply
waits in maildrop until pickup runs after `postfix start`. Exit status 0 when
the file is safe in maildrop; EX_DATAERR (65) for input that is not a queue
file; EX_TEMPFAIL (75) when it cannot be written (full disk).

Privileges: `sendmail` writes maildrop files itself when it may (root, the
mail_owner); otherwise it runs postdrop. maildrop is mode 0730, owner
mail_owner, group setgid_group (queue.create_layout), so postdrop must run
with that group. The kernel ignores the set-group-ID bit on interpreted
scripts, so `make install` compiles install/setgid-wrapper.c into the
installed `postdrop` (root:setgid_group, mode 2755): it replaces the
environment, refuses a configuration directory other than the default to
users, and runs main() here with the caller's real uid. The files it writes
belong to the real user (mode 0744 when complete, readable by pickup), which
is what pickup logs as `uid=`.

Interface: main(argv=None) -> exit status; drop(data, uid, cfg) -> queue_id
"""

from __future__ import annotations

import getopt
import os
import sys

from pymaster import ipc, log, queue, records
from pymaster.config import Config, ConfigError, load_config

EX_USAGE = 64
EX_DATAERR = 65
EX_TEMPFAIL = 75
MAILDROP = "maildrop"
# Readable by pickup, which runs as mail_owner while the file is the user's.
MAILDROP_MODE = 0o644


def drop(data: bytes, uid: int, cfg: Config) -> str:
    """drop - write the queue file DATA into maildrop as user UID; its queue ID.

    The working directory must be the queue directory. Raises
    CorruptQueueFile for bad input and OSError when the write fails."""
    msg = records.parse_message(data)
    attrs = dict(msg.attrs)
    attrs["uid"] = str(uid)
    return write_maildrop(msg.arrival_time, msg.sender, msg.recipients, attrs,
                          msg.read_content())


def write_maildrop(arrival_time: float, sender: str, recipients: list[records.Recipient],
                   attrs: dict[str, str], content: bytes) -> str:
    """write_maildrop - one complete file in maildrop/; its queue ID."""
    with queue.create(MAILDROP, mode=MAILDROP_MODE) as w:
        w.write_envelope(arrival_time, sender, recipients, attrs)
        w.write_content([content])
        return w.commit()


def master_running(queue_dir: str) -> bool:
    """master_running - whether the master of QUEUE_DIR is alive.

    Read-only on purpose: users run this through the set-group-ID wrapper
    and cannot open pid/master.pid for writing, as the lock test would."""
    from pymaster.master import PID_FILE, running_pid
    path = os.path.join(queue_dir, PID_FILE)
    if os.access(path, os.W_OK):
        return running_pid(queue_dir) is not None      # the exact, lock-based answer
    try:
        with open(path) as f:
            pid = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True             # alive, and not ours
    return True


def wake_pickup(cfg: Config) -> None:
    """wake_pickup - trigger pickup when the master runs; else the file waits."""
    if master_running(cfg.get("queue_directory")):
        ipc.trigger(ipc.service_endpoint(cfg.get("pickup_service_name") or "pickup"))


def main(argv: list[str] | None = None) -> int:
    log.setup("postdrop", stderr=True)
    try:
        opts, _ = getopt.getopt(sys.argv[1:] if argv is None else argv, "c:rv")
    except getopt.GetoptError as e:
        log.fatal(f"{e.msg}; usage: postdrop [-rv] [-c config_dir]", EX_USAGE)
    config_dir = next((v for o, v in opts if o == "-c"), None)
    try:
        cfg = load_config(config_dir)
    except ConfigError as e:
        log.fatal(str(e), EX_TEMPFAIL)
    log.setup("postdrop", cfg, stderr=True)
    try:
        queue.enter_spool(cfg)
    except OSError as e:
        log.fatal(f"chdir {cfg.get('queue_directory')}: {e.strerror}", EX_TEMPFAIL)
    data = sys.stdin.buffer.read()
    try:
        drop(data, os.getuid(), cfg)
    except records.CorruptQueueFile as e:
        log.fatal(f"uid={os.getuid()}: malformed input: {e.reason}", EX_DATAERR)
    except OSError as e:
        log.fatal(f"uid={os.getuid()}: create file {MAILDROP}: {e.strerror or e}", EX_TEMPFAIL)
    wake_pickup(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
