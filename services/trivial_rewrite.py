"""trivial-rewrite: address rewriting and resolving as a service (Postfix's trivial-rewrite(8)).

pymaster's programs rewrite and resolve addresses in-process, through
pymaster/mail/rewrite.py and pymaster/mail/resolve.py, with tables opened
once per process; none of them asks this service. It exists so that the
master.cf entry of a Postfix installation (`rewrite unix - - y - -
trivial-rewrite`) names a real program, and it answers the same two
questions for any client that does ask (a test, a tool, a future proxy):

    {"op": "rewrite", "rule": "local"|"remote", "address": A}
        -> {"status": "ok", "address": canonical A}
    {"op": "resolve", "address": A, "sender": S (optional)}
        -> {"status": "ok", "transport", "nexthop", "recipient", "class", "flags"}
    {"op": "verify", ...}  the same as resolve (address probes)

Anything else is {"status": "error", "reason": ...}.

Interface:
    TrivialRewrite(cfg).handle(header) -> reply header
    main()   the body of libexec/trivial-rewrite
"""

from __future__ import annotations

from pymaster.mail.config import Config
from pymaster.mail.resolve import Resolver
from pymaster.mail.rewrite import Rewriter
from pymaster.master import service


class TrivialRewrite:
    """The two jobs, over the tables of one configuration."""

    def __init__(self, cfg: Config) -> None:
        self.rewriter = Rewriter(cfg)
        self.resolver = Resolver(cfg)
        self.prober = Resolver(cfg, probe=True)

    def handle(self, header: dict) -> dict:
        """handle - one request; the reply header."""
        op = header.get("op")
        address = str(header.get("address", ""))
        if op == "rewrite":
            rule = str(header.get("rule", "local"))
            try:
                return {"status": "ok", "address": self.rewriter.canonicalize(address, rule)}
            except ValueError as e:
                return {"status": "error", "reason": str(e)}
        if op in ("resolve", "verify"):
            resolver = self.prober if op == "verify" else self.resolver
            sender = header.get("sender")
            r = resolver.resolve(address, None if sender is None else str(sender))
            return {"status": "ok", "transport": r.transport, "nexthop": r.nexthop,
                    "recipient": r.recipient, "class": r.address_class,
                    "flags": sorted(r.flags)}
        return {"status": "error", "reason": f"unknown request: {op}"}


def pre_jail(svc: service.Service) -> TrivialRewrite:
    return TrivialRewrite(svc.cfg)


def run(svc: service.Service) -> None:
    rewrite = svc.enter_jail(pre_jail)
    svc.serve_requests(lambda header, payload: (rewrite.handle(header), []), many=True)


def main() -> None:
    service.main("trivial-rewrite", run)
