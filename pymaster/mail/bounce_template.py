"""Delivery status notification templates, as bounce(5) defines them.

A notice (non-delivery, delay warning, success report, verification
report) starts with a template: a few message headers and the
human-readable text the bounce service puts before the per-recipient
lines. Four templates exist, each with a built-in default that
`bounce_template_file` may replace:

    failure_template   Undelivered Mail Returned to Sender
    delay_template     Delayed Mail (still being retried)
    success_template   Successful Mail Delivery Report
    verify_template      Mail Delivery Status Report

The template file (bounce(5)) holds `name = <<TERMINATOR` blocks that end
at a line holding only TERMINATOR; outside them, blank lines and `#`
comments. A block is header lines (Charset:, From:, Subject:,
Postmaster-Subject:), an empty line, then the text. The text expands
`$name`, `${name}` and `$(name)` from main.cf, plus
`<time>_<unit>` for delay_warning_time, maximal_queue_lifetime and
bounce_queue_lifetime (units seconds, minutes, hours, days, weeks:
`$delay_warning_time_hours`); `$$` is a literal dollar sign.

Interface:
    Template(name, charset, sender, subject, postmaster_subject, text)
    load_templates(cfg) -> dict[name, Template]    defaults + the file; TemplateError
    parse_template_file(path) -> dict[name, Template]
    template.expand(cfg) -> list[str]              the text lines, expanded
    TEMPLATE_NAMES, DEFAULT_TEMPLATES, TemplateError
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from pymaster.mail.config import Config

TEMPLATE_NAMES = ("failure_template", "delay_template", "success_template", "verify_template")
HEADER_FIELDS = {"charset": "charset", "from": "sender", "subject": "subject",
                 "postmaster-subject": "postmaster_subject"}
TIME_PARAMS = ("delay_warning_time", "maximal_queue_lifetime", "bounce_queue_lifetime")
TIME_UNITS = {"seconds": 1, "minutes": 60, "hours": 3600, "days": 86400, "weeks": 604800}
_START_RE = re.compile(r"^\s*([A-Za-z0-9_]+)\s*=\s*<<\s*(\S+)\s*$")
_VAR_RE = re.compile(r"\$(?:\$|\{([A-Za-z0-9_]+)\}|\(([A-Za-z0-9_]+)\)|([A-Za-z0-9_]+))")


class TemplateError(Exception):
    """A template file that cannot be used: says which file and line."""


@dataclass(frozen=True)
class Template:
    name: str
    charset: str = "us-ascii"
    sender: str = "MAILER-DAEMON (Mail Delivery System)"
    subject: str = ""
    postmaster_subject: str = ""
    text: str = ""

    def expand(self, cfg: Config) -> list[str]:
        """expand - the text lines with every $name replaced."""
        return [expand_line(line, cfg, self.name) for line in self.text.split("\n")]


# The built-in texts: Postfix's defaults, so a notice reads the same.
_SIGNATURE = "                   The mail system"
_ASSISTANCE = ("For further assistance, please send mail to postmaster.\n\n"
               "If you do so, please include this problem report. You can\n"
               "delete your own text from the attached returned message.\n\n")

DEFAULT_TEMPLATES: dict[str, Template] = {
    "failure_template": Template(
        "failure_template",
        subject="Undelivered Mail Returned to Sender",
        postmaster_subject="Postmaster Copy: Undelivered Mail",
        text=("This is the mail system at host $myhostname.\n\n"
              "I'm sorry to have to inform you that your message could not\n"
              "be delivered to one or more recipients. It's attached below.\n\n"
              + _ASSISTANCE + _SIGNATURE)),
    "delay_template": Template(
        "delay_template",
        subject="Delayed Mail (still being retried)",
        postmaster_subject="Postmaster Warning: Delayed Mail",
        text=("This is the mail system at host $myhostname.\n\n"
              + "#" * 68 + "\n"
              "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\n"
              + "#" * 68 + "\n\n"
              "Your message could not be delivered for more than "
              "$delay_warning_time_hours hour(s).\n"
              "It will be retried until it is $maximal_queue_lifetime_days day(s) old.\n\n"
              + _ASSISTANCE + _SIGNATURE)),
    "success_template": Template(
        "success_template",
        subject="Successful Mail Delivery Report",
        text=("This is the mail system at host $myhostname.\n\n"
              "Your message was successfully delivered to the destination(s)\n"
              "listed below. If the message was delivered to mailbox you will\n"
              "receive no further notifications. Otherwise you may still receive\n"
              "notifications of mail delivery errors from other systems.\n\n"
              + _SIGNATURE)),
    "verify_template": Template(
        "verify_template",
        subject="Mail Delivery Status Report",
        text=("This is the mail system at host $myhostname.\n\n"
              "Enclosed is the mail delivery report that you requested.\n\n"
              + _SIGNATURE)),
}


def expand_line(line: str, cfg: Config, where: str = "template") -> str:
    """expand_line - $name, ${name}, $(name) and $$ in one line of text."""
    def one(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(2) or m.group(3)
        value = template_variable(name, cfg)
        if value is None:
            raise TemplateError(f"{where}: unknown parameter name: ${name}")
        return value
    return _VAR_RE.sub(one, line)


def template_variable(name: str, cfg: Config) -> str | None:
    """template_variable - a main.cf value, or a time parameter in a unit."""
    for param in TIME_PARAMS:
        if name.startswith(param + "_") and name[len(param) + 1:] in TIME_UNITS:
            seconds = cfg.time(param)
            return str(seconds // TIME_UNITS[name[len(param) + 1:]])
    if cfg.raw(name) is None:
        return None
    return cfg.get(name)


def parse_template_file(path: str) -> dict[str, Template]:
    """parse_template_file - the templates PATH defines (not the defaults)."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().split("\n")
    except OSError as e:
        raise TemplateError(f"open {path}: {e.strerror or e}") from None
    found: dict[str, Template] = {}
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _START_RE.match(line)
        if not m:
            raise TemplateError(f"{path}, line {i}: expected `name = <<TERMINATOR`")
        name, terminator = m.groups()
        if name not in TEMPLATE_NAMES:
            raise TemplateError(f"{path}, line {i}: unknown template name: {name}")
        start = i
        body: list[str] = []
        while i < len(lines) and lines[i].rstrip() != terminator:
            body.append(lines[i])
            i += 1
        if i >= len(lines):
            raise TemplateError(f"{path}, line {start}: {name}: "
                                f"missing terminator line `{terminator}`")
        i += 1
        found[name] = _parse_block(path, start, name, body)
    return found


def _parse_block(path: str, start: int, name: str, body: list[str]) -> Template:
    """_parse_block - one template's headers, empty line, then text."""
    fields: dict[str, str] = {}
    n = 0
    while n < len(body) and body[n].strip():
        key, colon, value = body[n].partition(":")
        attr = HEADER_FIELDS.get(key.strip().lower())
        if not colon or attr is None:
            raise TemplateError(f"{path}, line {start + n + 1}: {name}: "
                                f"unknown header: {body[n].strip()}")
        fields[attr] = value.strip()
        n += 1
    text = "\n".join(body[n + 1:]).rstrip("\n")
    template = replace(DEFAULT_TEMPLATES[name], text=text, **fields)
    if template.charset.lower() in ("us-ascii", "ascii") and not text.isascii():
        raise TemplateError(f"{path}, line {start}: {name}: 8-bit text "
                            f"with charset {template.charset}")
    return template


def load_templates(cfg: Config) -> dict[str, Template]:
    """load_templates - the built-in templates with bounce_template_file's on top.

    Every template is expanded once here, so a bad `$name` is reported
    when the service starts rather than when a notice is due."""
    templates = dict(DEFAULT_TEMPLATES)
    path = cfg.get("bounce_template_file").strip()
    if path:
        templates.update(parse_template_file(path))
        for t in templates.values():
            try:
                t.expand(cfg)
            except TemplateError as e:
                raise TemplateError(f"{path}: {e}") from None
    return templates
