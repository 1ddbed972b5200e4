"""postlog: log text from a shell script the way Postfix programs log.

    postlog [-iv] [-c config_dir] [-p priority] [-t tag] [text ...]

The text on the command line is one record; without text, each line of
standard input is one record. Records go where every pymaster program logs
(maillog_file, else syslog) with the tag `$syslog_name/postlog` or the -t
tag, and the process ID; a copy goes to standard error when that is a
terminal. -p sets the severity: info (default), warn, error, fatal, panic;
like Postfix's postlog, a fatal or panic record does not change the exit
status. -i is accepted and ignored (the ID is always included since
Postfix 3.4).

Interface: main(argv=None) -> int
"""

from __future__ import annotations

import getopt
import sys

from pymaster.mail.config import ConfigError, load_config
from pymaster.util import log

PROG = "postlog"
PRIORITIES = {"info": "", "warn": "warning: ", "warning": "warning: ", "error": "error: ",
              "fatal": "fatal: ", "panic": "panic: "}
SEVERITY = {"": log.LOG_INFO, "warning: ": log.LOG_WARNING, "error: ": log.LOG_ERR,
            "fatal: ": log.LOG_CRIT, "panic: ": log.LOG_CRIT}


def _fail(text: str) -> int:
    sys.stderr.write(f"{PROG}: fatal: {text}\n")
    return 1


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        opts, words = getopt.getopt(args, "c:ip:t:v")
    except getopt.GetoptError as e:
        return _fail(f"usage: {PROG} [-iv] [-c config_dir] [-p priority] [-t tag] [text] "
                     f"({e.msg})")
    config_dir, prefix, tag, verbose = None, "", None, 0
    for opt, arg in opts:
        if opt == "-c":
            config_dir = arg
        elif opt == "-p":
            if arg not in PRIORITIES:
                return _fail(f"unknown priority value: {arg}")
            prefix = PRIORITIES[arg]
        elif opt == "-t":
            tag = arg
        elif opt == "-v":
            verbose += 1
    try:
        cfg = load_config(config_dir)
    except ConfigError as e:
        return _fail(str(e))
    log.setup(PROG, cfg, verbose, stderr=sys.stderr.isatty())
    log.set_tag(tag)
    records = [" ".join(words)] if words else (line.rstrip("\n") for line in sys.stdin)
    for text in records:
        log.emit(SEVERITY[prefix], prefix + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
