"""pipe(8): the delivery agent that hands mail to an external command.

A master.cf service runs it with attributes, the last of which is the
command itself:

    inforeply unix - n n - - pipe
        flags=F user=autoresp argv=/usr/local/bin/inforeply.pl ${sender}

The command is executed directly (never through a shell), as the `user=`
account (`user=name:group` sets the group; root and the mail_owner are
refused), with the message on standard input. Its arguments may name the
macros of pipe(8): ${sender}, ${recipient}, ${nexthop}, ${size}, ${queue_id},
${client_address} ... (`$name`, `${name}`, `$(name)`, `${name?text}`,
`${name:text}`, `$$`). An argument that names a per-recipient macro
(${recipient}, ${original_recipient}, ${domain}, ${extension}, ${mailbox},
${user}) becomes one argument per recipient, so an address is always one
argument whatever characters it holds.

Attributes: flags= (B D F O R X h q u . >, as pipe(8) defines them),
user=, argv=, size= (bigger mail bounces), eol= (line ending, C escapes,
default \\n), directory= (working directory), null_sender= (what ${sender}
says for the null sender, default MAILER-DAEMON). The command may run for
$SERVICE_time_limit (default command_time_limit); qmgr gives it at most
$SERVICE_destination_recipient_limit recipients per request.

Exit status: 0 is delivered (`delivered via SERVICE service`); a
<sysexits.h> code means what pymaster.util.sysexits says (75 defers, 67 bounces
`user unknown` ...); output that starts with an enhanced status code (4.x.x,
5.x.x) decides instead; a signal defers; any other status bounces
`Command died with status N: "COMMAND"`. The command's output (stdout and
stderr, the first part) is appended: `. Command output: ...`.

When pipe does not run as root (the in-tree instance), the command runs
as pipe's own account. Postfix's chroot= attribute is not supported.

One module per part of the job:

    attributes.py  the master.cf attributes, user= checks
    macros.py      ${name} expansion of the command's arguments
    message.py     the message as the command reads it (the flags)
    command.py     running the command; exit status meanings

Interface:
    main()                                      the libexec/pipe program
    pre_jail(svc) -> PipeAgent, run(svc)
    PipeAgent(name, attrs, cfg).deliver(req, status)
    PipeAgent(name, attrs, cfg).verify(req, status)    sendmail -bv: what it would run
    (and the parts' interfaces, re-exported here)
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from pymaster.mail import delivery, verp
from pymaster.mail.config import Config
from pymaster.master import service
from pymaster.util import log

from .attributes import (
    FLAG_CHARS,
    PipeAttributes,
    PipeConfigError,
    parse_attributes,
    parse_eol,
    resolve_user,
)
from .command import (
    BOUNCED,
    DEFERRED,
    SENT,
    CommandResult,
    Outcome,
    command_environment,
    command_outcome,
    run_command,
)
from .macros import (
    PER_RECIPIENT,
    expand,
    expand_argv,
    macro_names,
    message_macros,
    recipient_macros,
    split_extension,
)
from .message import format_message

__all__ = ["FLAG_CHARS", "PER_RECIPIENT", "CommandResult", "Outcome", "PipeAgent",
           "PipeAttributes", "PipeConfigError", "command_environment", "command_outcome",
           "expand", "expand_argv", "format_message", "macro_names", "main", "pre_jail", "run",
           "message_macros", "parse_attributes", "parse_eol", "recipient_macros",
           "resolve_user", "run_command", "split_extension"]


@dataclass
class PipeAgent:
    """One pipe service: its attributes and limits, applied to delivery requests."""
    name: str
    attrs: PipeAttributes
    cfg: Config
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.env = self.env or command_environment(self.cfg)
        self.time_limit = self.cfg.time(f"{self.name}_time_limit")
        self.delimiters = self.cfg.get("recipient_delimiter")

    def deliver(self, req: delivery.DeliveryRequest, status: delivery.Status) -> None:
        """deliver - run the command once for all of REQ's recipients."""
        outcome = self.attempt(req)
        for rcpt in req.recipients:
            report(status, rcpt, self.name, outcome)

    def verify(self, req: delivery.DeliveryRequest, status: delivery.Status) -> None:
        """verify - sendmail -bv: the size check, then the command it would run."""
        limit = self.attrs.size_limit
        if limit and delivery.open_content(req).size > limit:
            outcome = Outcome(BOUNCED, "5.2.3", "message too large")
        else:
            outcome = Outcome(SENT, "2.0.0", f"delivers to command: {self.attrs.argv[0]}")
        for rcpt in req.recipients:
            report(status, rcpt, self.name, outcome)

    def attempt(self, req: delivery.DeliveryRequest) -> Outcome:
        """attempt - check the limits, build arguments and input, run the command."""
        if not req.recipients:
            return Outcome(SENT, "2.0.0", f"delivered via {self.name} service")
        for flag in "DO":
            if self.attrs.has(flag) and len(req.recipients) > 1:
                log.warning(f"pipe flag `{flag}' requires "
                            f"{self.name}_destination_recipient_limit = 1")
                return Outcome(DEFERRED, "4.3.5", "mail system configuration error")
        message = delivery.open_content(req)
        size = message.size
        if self.attrs.size_limit and size > self.attrs.size_limit:
            return Outcome(BOUNCED, "5.2.3", "message too large")
        argv = expand_argv(self.attrs.argv, message_macros(req, self.attrs, size),
                           [recipient_macros(r, self.attrs, self.delimiters)
                            for r in req.recipients])
        only = req.recipients[0] if len(req.recipients) == 1 else None
        data = format_message(message.read_content(), verp.request_sender(req), only, self.attrs,
                              req.arrival_time or None)
        result = run_command(argv, data, self.attrs, self.env, self.time_limit)
        return command_outcome(result, self.attrs.argv[0], self.name)


def report(status: delivery.Status, rcpt, relay: str, outcome: Outcome) -> None:
    """report - record OUTCOME for one recipient."""
    status.report(rcpt, outcome.kind, relay, outcome.reason, outcome.dsn)


def pre_jail(svc: service.Service) -> PipeAgent:
    """pre_jail - the master.cf attributes read and the user= account looked up."""
    try:
        attrs = parse_attributes(service.service_words(sys.argv[1:]), svc.cfg, os.geteuid() == 0)
    except PipeConfigError as e:
        log.fatal(str(e))
    return PipeAgent(svc.name, attrs, svc.cfg)


def run(svc: service.Service) -> None:
    # pipe keeps root (master.cf unpriv = n): it starts each command as user=.
    agent = svc.enter_jail(pre_jail)
    svc.serve_requests(delivery.request_handler(agent.deliver, svc.cfg, verify=agent.verify))


def main() -> None:
    service.main("pipe", run)
