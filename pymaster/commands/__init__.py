"""The command-line tools (postfix, postconf, postmap, postqueue, ...).

Shared here: getopt_message(error), the text glibc's getopt prints for a bad
option, which Postfix's commands show before their usage line.
"""

import getopt


def getopt_message(error: getopt.GetoptError) -> str:
    """getopt_message - "invalid option -- 'Z'" or "option requires an argument -- 'd'"."""
    if "requires argument" in error.msg:
        return f"option requires an argument -- '{error.opt}'"
    return f"invalid option -- '{error.opt}'"
