"""mailq: list the mail queue, the Sendmail-compatible name for `postqueue -p`.

    mailq [-C config_dir] [-v] [other Sendmail options, ignored]

Interface: main(argv=None) -> exit status
"""

from __future__ import annotations

import sys

from pymaster.commands import postqueue


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = ["-p"]
    i = 0
    while i < len(argv):
        if argv[i] == "-C" and i + 1 < len(argv):
            args += ["-c", argv[i + 1]]
            i += 1
        elif argv[i].startswith("-C") and len(argv[i]) > 2:
            args += ["-c", argv[i][2:]]
        i += 1
    return postqueue.main(args, program="mailq")


if __name__ == "__main__":
    sys.exit(main())
