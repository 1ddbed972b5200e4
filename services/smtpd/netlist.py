"""Host/network lists for smtpd: pymaster.mail.netlist's, with answers kept.

postscreen's access list needs the same matching (permit_mynetworks), so the
code lives in the library; smtpd's modules import it from here. A session
asks several lists about its client (mynetworks at each RCPT, the XCLIENT,
XFORWARD and XVERP lists at EHLO and MAIL, the bare newline exclusions at
the start), and each match parsed the address with `ipaddress` again
(about 4% of smtpd's profile with one message per session). A list made only of
networks and names answers the same for the same client every time, so
its answers are kept (a bounded number); a list with a table entry asks the
table each time, since a table may change while the process runs.

Interface:
    NetList(entries, subdomains=True) / NetList.from_param(cfg, name)
    NetList.match(address, name="unknown") -> bool
"""

from __future__ import annotations

from pymaster.mail import netlist
from pymaster.mail.config import Config

KEPT_ANSWERS = 1024     # clients remembered per list; all are forgotten when full

__all__ = ["NetList"]


class NetList(netlist.NetList):
    """A host/network list that remembers its answers when no table can change them."""

    def __init__(self, entries: list[str], subdomains: bool = True) -> None:
        super().__init__(entries, subdomains)
        self._fixed = all(kind != "table" for _, kind, _ in self.rules)
        self._answers: dict[tuple[str, str], bool] = {}

    @classmethod
    def from_param(cls, cfg: Config, name: str) -> "NetList":
        made = super().from_param(cfg, name)
        assert isinstance(made, NetList)  # made by cls
        return made

    def match(self, address: str, name: str = "unknown") -> bool:
        """match - whether client ADDRESS (with host NAME) is on the list."""
        if not self.rules:
            return False        # nothing to parse the address for
        if not self._fixed:
            return super().match(address, name)
        key = (address, name)
        answer = self._answers.get(key)
        if answer is None:
            if len(self._answers) >= KEPT_ANSWERS:
                self._answers.clear()
            answer = self._answers[key] = super().match(address, name)
        return answer
