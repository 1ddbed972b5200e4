"""The command-line tools (postfix, postconf, postmap, postqueue, ...).

Shared here: getopt_message(error), the text glibc's getopt prints for a bad
option, which Postfix's commands show before their usage line.

Every command's output may be piped into `head`: importing this package
restores SIGPIPE's default action (Python ignores it), so a command whose
reader went away ends quietly, as a C program does, and never prints a
BrokenPipeError traceback. Services never import this package.

Interface: getopt_message(error) -> str
"""

import getopt
import signal

signal.signal(signal.SIGPIPE, signal.SIG_DFL)


def getopt_message(error: getopt.GetoptError) -> str:
    """getopt_message - "invalid option -- 'Z'" or "option requires an argument -- 'd'"."""
    if "requires argument" in error.msg:
        return f"option requires an argument -- '{error.opt}'"
    return f"invalid option -- '{error.opt}'"
