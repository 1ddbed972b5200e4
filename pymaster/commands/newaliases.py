"""newaliases: rebuild every alias database named in $alias_database.

    newaliases [-C config_dir] [-oA... ignored] [-v]

Equivalent to `postalias $alias_database` (sendmail -bi), as in Postfix;
the configuration directory is -C (sendmail's spelling) or $MAIL_CONFIG.
Exit status 0, or 1 after a fatal error.

Interface:
    main(argv=None) (console script `newaliases`)
    rebuild(config_dir=None, verbose=0) -> exit status
"""

from __future__ import annotations

import sys

from pymaster.commands.postalias import AliasCommand
from pymaster.mail.config import ConfigError, load_config
from pymaster.util import log
from pymaster.util.tables import TableError


def rebuild(config_dir: str | None = None, verbose: int = 0) -> int:
    """rebuild - postalias each table of $alias_database."""
    log.setup("newaliases", stderr=True)
    try:
        cfg = load_config(config_dir)
        log.setup("newaliases", cfg, verbose, stderr=True)
        command = AliasCommand()
        command.cfg = cfg
        for spec in cfg.list("alias_database"):
            command.do_build(spec)
    except (ConfigError, TableError) as e:
        log.fatal(str(e))
    return 0


def _parse(argv: list[str]) -> tuple[str | None, int]:
    config_dir, verbose = None, 0
    args = iter(argv)
    for arg in args:
        if arg == "-C":
            config_dir = next(args, None)
        elif arg.startswith("-C"):
            config_dir = arg[2:]
        elif arg == "-v":
            verbose += 1
        # Other sendmail options (-oA, -N, -I) mean nothing to newaliases.
    return config_dir, verbose


def main(argv: list[str] | None = None) -> int:
    sys.exit(rebuild(*_parse(sys.argv[1:] if argv is None else argv)))
