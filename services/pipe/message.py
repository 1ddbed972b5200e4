"""What a pipe(8) command reads on its input: envelope lines per the flags, then the message.

F `From sender date`, R Return-Path:, D Delivered-To:, O X-Original-To:
(D and O need a single recipient), > `>From ` quoting, . dot-stuffing,
B an empty line at the end; every line ends in eol= (default \\n).

Interface: format_message(content, sender, rcpt, attrs, when=None) -> bytes
"""

from __future__ import annotations

import re
import time

from pymaster.mail.addr import quote_local_part, split_address

from .attributes import PipeAttributes


def format_message(content: bytes, sender: str, rcpt, attrs: PipeAttributes,
                   when: float | None = None) -> bytes:
    """format_message - what the command reads: envelope lines per the flags, then content.

    RCPT is the only recipient (flags D and O need one) or None."""
    lines: list[str] = []
    if attrs.has("F"):
        stamp = time.asctime(time.localtime(time.time() if when is None else when))
        lines.append(f"From {sender or 'MAILER-DAEMON'}  {stamp}")
    if attrs.has("R"):
        lines.append(f"Return-Path: <{_quoted(sender)}>")
    if attrs.has("D") and rcpt is not None:
        lines.append(f"Delivered-To: {_quoted(rcpt.address.lower())}")
    if attrs.has("O") and rcpt is not None:
        lines.append(f"X-Original-To: {_quoted(rcpt.orig or rcpt.address)}")
    head = "".join(line + "\n" for line in lines).encode("utf-8", "surrogateescape")
    body = content
    if attrs.has(">"):
        body = re.sub(rb"(?m)^From ", b">From ", body)
    if attrs.has("."):
        body = re.sub(rb"(?m)^\.", b"..", body)
    if body and not body.endswith(b"\n"):
        body += b"\n"
    if attrs.has("B"):
        body += b"\n"
    data = head + body
    return data if attrs.eol == b"\n" else data.replace(b"\n", attrs.eol)


def _quoted(addr: str) -> str:
    if not addr:
        return ""
    local, domain = split_address(addr)
    return f"{quote_local_part(local)}@{domain}" if domain else quote_local_part(local)
