"""saslpasswd2: manage the built-in SASL password store (Cyrus saslpasswd2's options).

    saslpasswd2 [-v] [-c [-p] [-n]] [-a appname] [-f file] [-u realm] userid
    saslpasswd2 [-v] -d [-a appname] [-f file] [-u realm] userid

-c creates the user (or replaces its password), -d deletes it, -p reads the
password from standard input without prompting (the first line), -f names
the store (default: smtpd_sasl_db, $config_directory/sasldb2), -u the realm
(default: smtpd_sasl_local_domain, empty). -a and -n are accepted for
compatibility and change nothing: there is one store, and it never keeps
plain-text passwords. Without -c the user must exist already.

The store keeps salted scrypt hashes (pymaster/mail/sasl/passwd.py), mode 0600.

Interface:
    main(argv=None)     console script entry; exit status 0 or 1
"""

from __future__ import annotations

import getpass
import sys

from pymaster.mail.config import ConfigError, load_config
from pymaster.mail.sasl.passwd import PasswordFile, PasswordFileError

USAGE = ("usage: saslpasswd2 [-v] [-c [-p] [-n]] [-d] [-a appname] [-f sasldb] "
         "[-u DOM] userid")


class Failure(Exception):
    """An error for the user: printed as `saslpasswd2: TEXT`, exit 1."""


def parse(argv: list[str]) -> tuple[dict, str]:
    """parse - getopt-style "cpdnva:f:u:" options, then exactly one user id."""
    opts: dict[str, str] = {}
    i = 0
    while i < len(argv) and argv[i].startswith("-") and argv[i] != "-":
        word = argv[i]
        if word == "--":
            i += 1
            break
        j = 1
        while j < len(word):
            flag = word[j]
            if flag in "cpdnvh":
                opts[flag] = "yes"
            elif flag in "afu":
                value = word[j + 1:]
                if not value:
                    i += 1
                    if i >= len(argv):
                        raise Failure(f"option -{flag} requires an argument\n{USAGE}")
                    value = argv[i]
                opts[flag] = value
                break
            else:
                raise Failure(f"invalid option -- '{flag}'\n{USAGE}")
            j += 1
        i += 1
    rest = argv[i:]
    if "h" in opts:
        raise Failure(USAGE)
    if len(rest) != 1:
        raise Failure(USAGE)
    if "c" in opts and "d" in opts:
        raise Failure("can't both create and delete")
    return opts, rest[0]


def read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        return line.rstrip("\r\n")
    first = getpass.getpass("Password: ")
    again = getpass.getpass("Again (for verification): ")
    if first != again:
        raise Failure("passwords don't match")
    return first


def run(argv: list[str]) -> int:
    opts, user = parse(argv)
    try:
        cfg = load_config()
    except ConfigError as e:
        raise Failure(str(e)) from None
    path = opts.get("f") or cfg.get("smtpd_sasl_db")
    realm = opts.get("u", cfg.get("smtpd_sasl_local_domain").strip())
    if "@" in user and "u" not in opts:
        user, _, realm = user.rpartition("@")
    store = PasswordFile(path).load()
    if "d" in opts:
        if not store.delete(user, realm):
            raise Failure(f"user {user} not found")
    else:
        if "c" not in opts and not store.exists(user, realm):
            raise Failure(f"user {user} not found (use -c to create it)")
        password = read_password("p" in opts)
        if not password:
            raise Failure("no password given")
        store.set(user, realm, password)
    store.save()
    if "v" in opts:
        action = "deleted" if "d" in opts else "set"
        sys.stderr.write(f"saslpasswd2: {action} {user}{'@' + realm if realm else ''} "
                         f"in {path}\n")
    return 0


def main(argv: list[str] | None = None) -> None:
    try:
        sys.exit(run(list(sys.argv[1:] if argv is None else argv)))
    except (Failure, PasswordFileError) as e:
        sys.stderr.write(f"saslpasswd2: {e}\n")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(1)
