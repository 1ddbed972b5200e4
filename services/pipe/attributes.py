"""pipe(8)'s master.cf attributes: flags=, user=, size=, eol=, directory=, null_sender=, argv=.

The master passes a pipe service its own options first (-n NAME -t TYPE
...), then the master.cf words as written. The command's words after
argv= are taken verbatim, so options of the command (`-d`, `--`) stay its.
Errors are what Postfix's pipe makes fatal, with its texts.

Interface:
    PipeAttributes, PipeConfigError, FLAG_CHARS
    parse_attributes(words, cfg, as_root) -> PipeAttributes
    parse_eol(text) -> bytes; resolve_user(spec, cfg, as_root) -> (name, uid, gid)
"""

from __future__ import annotations

import grp
import pwd
import re
from dataclasses import dataclass

from pymaster.mail.config import Config
from pymaster.util import log

FLAG_CHARS = "BDFORXhqu.>"
C_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t",
             "v": "\v", "\\": "\\"}


class PipeConfigError(Exception):
    """A master.cf pipe entry that cannot work: Postfix's pipe makes this fatal."""


@dataclass
class PipeAttributes:
    """What a pipe service's master.cf entry says."""
    argv: list[str]
    flags: str = ""
    user: str = ""
    uid: int | None = None
    gid: int | None = None
    size_limit: int = 0
    eol: bytes = b"\n"
    directory: str = ""
    null_sender: str = "MAILER-DAEMON"

    def has(self, flag: str) -> bool:
        return flag in self.flags



def parse_attributes(words: list[str], cfg: Config, as_root: bool) -> PipeAttributes:
    """parse_attributes - the pipe attributes of a master.cf entry's WORDS."""
    found: dict[str, str] = {}
    argv: list[str] | None = None
    i = 0
    while i < len(words):
        word = words[i]
        if word in ("-o",):
            i += 2              # a -o override among the words: the runtime took it
            continue
        if word.startswith("argv="):
            argv = [word[len("argv="):], *words[i + 1:]]
            break
        name, eq, value = word.partition("=")
        if not eq or name not in ("flags", "user", "size", "eol", "directory",
                                  "null_sender", "chroot"):
            raise PipeConfigError(f"unknown attribute name: {word}")
        found[name] = value
        i += 1
    if argv is None or not argv[0]:
        raise PipeConfigError("missing argv= command-line attribute")
    if "chroot" in found and found["chroot"]:
        raise PipeConfigError("chroot= command-line attribute is not supported")
    attrs = PipeAttributes(argv=argv, flags=parse_flags(found.get("flags", "")),
                           eol=parse_eol(found.get("eol", "\\n")),
                           directory=found.get("directory", ""),
                           null_sender=found.get("null_sender", "MAILER-DAEMON"))
    attrs.size_limit = parse_size(found.get("size", "0"))
    if "user" not in found or not found["user"]:
        raise PipeConfigError("missing user= command-line attribute")
    attrs.user, attrs.uid, attrs.gid = resolve_user(found["user"], cfg, as_root)
    return attrs


def parse_flags(text: str) -> str:
    """parse_flags - the known flag characters of TEXT; others are warned about."""
    for c in text:
        if c not in FLAG_CHARS:
            log.warning(f"unknown flag: {c} (ignored)")
    return "".join(c for c in text if c in FLAG_CHARS)


def parse_size(text: str) -> int:
    """parse_size - the size= limit in bytes (0: none)."""
    if not text.isdigit():
        raise PipeConfigError(f"size= command-line attribute: bad value: {text}")
    return int(text)


def parse_eol(text: str) -> bytes:
    """parse_eol - the eol= record delimiter, with C escapes (\\r\\n, \\012 ...)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c != "\\" or i + 1 >= len(text):
            out.append(c)
            i += 1
            continue
        nxt = text[i + 1]
        octal = re.match(r"[0-7]{1,3}", text[i + 1:])
        if octal:
            out.append(chr(int(octal.group(), 8)))
            i += 1 + len(octal.group())
        else:
            out.append(C_ESCAPES.get(nxt, nxt))
            i += 2
    return "".join(out).encode("latin-1", "replace")


def resolve_user(spec: str, cfg: Config, as_root: bool) -> tuple[str, int | None, int | None]:
    """resolve_user - (name, uid, gid) of `user=name[:group]`; never root, never mail_owner.

    Not running as root, an account that does not exist is no error: the
    command runs as this process's own account anyway."""
    name, _, group = spec.partition(":")
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        if as_root:
            raise PipeConfigError(f"unknown user name: {name}") from None
        if name == "root":
            raise PipeConfigError("user= command-line attribute specifies root privileges") \
                from None
        return name, None, None
    uid, gid = pw.pw_uid, pw.pw_gid
    if group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            if as_root:
                raise PipeConfigError(f"unknown group name: {group}") from None
    if uid == 0:
        raise PipeConfigError("user= command-line attribute specifies root privileges")
    if as_root and gid == 0:
        raise PipeConfigError("user= command-line attribute specifies privileged group id 0")
    if as_root and name == cfg.get("mail_owner"):
        raise PipeConfigError(f"user= command-line attribute specifies mail system owner "
                              f"{name}")
    return name, uid, gid
