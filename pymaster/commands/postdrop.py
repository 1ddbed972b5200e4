"""postdrop: put a locally submitted message into the maildrop queue.

    postdrop [-rv] [-c config_dir]

Standard input is one whole queue file in pymaster's record format (see
pymaster.mail.records), as `sendmail` builds it. postdrop checks that it parses,
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

Interface: main(argv=None) -> exit status (the writing is pymaster.mail.maildrop)
"""

from __future__ import annotations

import getopt
import os
import sys

from pymaster.mail import queue, records
from pymaster.mail.config import ConfigError, load_config
from pymaster.mail.maildrop import MAILDROP, drop, wake_pickup
from pymaster.util import log

EX_USAGE = 64
EX_DATAERR = 65
EX_TEMPFAIL = 75


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
