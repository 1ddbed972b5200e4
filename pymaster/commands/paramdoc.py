"""docs/parameters.md, generated from the parameter table (pymaster.mail.params).

    python -m pymaster.commands.paramdoc > docs/parameters.md
    (or: python -m pymaster.commands.postconf --doc)

Interface: render() -> str (the Markdown text)
"""

from __future__ import annotations

import sys

from pymaster.mail.params import PARAMS, PIPE_SUFFIXES, SERVICE_SUFFIXES

HEADER = """# main.cf parameters

Generated from `pymaster/mail/params.py` by `python -m pymaster.commands.paramdoc`; do not
edit by hand. Defaults are Postfix 3.7's (postconf(5)); `(computed)` means the
value is worked out at run time (`postconf -d NAME` shows it). A time without a
unit is in the unit shown. pymaster has no backwards-compatible mode: the
defaults are those of `compatibility_level = 3.6`.

"""


def _cell(text: str) -> str:
    return text.replace("|", "\\\\|").replace("`", "'") if text else ""


def _code(text: str) -> str:
    """_code - TEXT as inline code, with double backticks when it holds one."""
    if not text:
        return ""
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def render() -> str:
    """render - the whole Markdown page."""
    out = [HEADER, "| parameter | type | default | description |", "| --- | --- | --- | --- |"]
    for name in sorted(PARAMS):
        p = PARAMS[name]
        default = "(computed)" if p.default is None else _code(p.default)
        kind = f"time ({p.unit})" if p.type == "time" else p.type
        out.append(f"| `{name}` | {kind} | {default.replace('|', chr(92) + '|')} "
                   f"| {_cell(p.doc)} |")
    out += ["", "## Service-defined parameters", "",
            "A master.cf service that runs local, smtp, lmtp, virtual, error or pipe "
            "brings these, named after the service (`SERVICE_destination_concurrency_limit`); "
            "pipe services also get `SERVICE_time_limit`.", "",
            "| suffix | type | default |", "| --- | --- | --- |"]
    for suffix, (type_, default) in sorted({**SERVICE_SUFFIXES, **PIPE_SUFFIXES}.items()):
        out.append(f"| `SERVICE{suffix}` | {type_} | `{default}` |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
