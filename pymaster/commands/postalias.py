"""postalias: build, query, list and update alias databases, as postalias(1).

    postalias [-fFhimnNoprsuUvw] [-c config_dir] [-d key] [-q key] [type:]file...

The options and exit statuses are postmap's (pymaster.commands.postmap);
the input is in aliases(5) format (`name: value, value`, continuation
lines, quoted names and values), alias names are folded to lower case, and
a built database also holds the `@` -> `@` entry Postfix adds so that
readers can tell a complete database. Listings print `name:<TAB>value`.

Interface:
    main(argv=None) (console script `postalias`)
    AliasCommand    the postmap TableCommand with the aliases(5) format
"""

from __future__ import annotations

import sys
from typing import Iterable, Iterator

from pymaster.commands.postmap import TableCommand, run_command
from pymaster.mail.aliases import parse_aliases


class AliasCommand(TableCommand):
    program = "postalias"
    usage_text = ("usage: postalias [-Nfinoprsuvw] [-c config_dir] [-d key] "
                  "[-q key] [map_type:]file...")
    dump_format = "{key}:\t{value}"

    def entries(self, lines: Iterable[str], path: str) -> Iterator[tuple[int, str, str]]:
        return parse_aliases(lines, path, self.warn)

    def extra_entries(self) -> list[tuple[str, str]]:
        # Postfix's sentinel: sendmail-style readers wait for "@" before
        # trusting a database that may still be being written.
        return [("@", "@")]


def main(argv: list[str] | None = None) -> int:
    sys.exit(run_command(AliasCommand(), argv))
