"""postscreen_access_list: permanent allow and deny decisions by client address.

The list is read left to right and the first decision wins:
    permit_mynetworks     permit a client in $mynetworks
    type:table            the client address looked up (cidr:, texthash: ...):
                          `permit` allows, `reject` denies, `dunno` goes on
                          to the next entry (the value's first word counts)
A table that cannot answer is logged and skipped, as if it said dunno.

Interface:
    AccessList(entries, mynetworks).check(address) -> "permit" | "reject" | None
    AccessList.from_config(cfg, entries)
"""

from __future__ import annotations

from pymaster.mail.config import Config
from pymaster.mail.netlist import NetList
from pymaster.util import log
from pymaster.util.tables import Table, TableError, open_table

PERMIT_MYNETWORKS = "permit_mynetworks"


class AccessList:
    def __init__(self, entries: list[str], mynetworks: NetList | None) -> None:
        self.entries: list[str | Table] = []
        for entry in entries:
            if entry == PERMIT_MYNETWORKS:
                self.entries.append(entry)
            elif ":" in entry:
                self.entries.append(open_table(entry))
            else:
                log.warning(f"postscreen_access_list: unknown command: {entry}: ignored")
        self.mynetworks = mynetworks

    @classmethod
    def from_config(cls, cfg: Config, entries: list[str]) -> "AccessList":
        needs = PERMIT_MYNETWORKS in entries
        return cls(entries, NetList.from_param(cfg, "mynetworks") if needs else None)

    def check(self, address: str) -> str | None:
        for entry in self.entries:
            if isinstance(entry, str):
                if self.mynetworks is not None and self.mynetworks.match(address):
                    return "permit"
                continue
            try:
                value = entry.lookup(address)
            except TableError as e:
                log.warning(f"postscreen_access_list: {entry.spec}: lookup {address}: {e}")
                continue
            verdict = (value or "").split(maxsplit=1)[0].lower() if value else ""
            if verdict in ("permit", "reject"):
                return verdict
            if verdict and verdict != "dunno":
                log.warning(f"{entry.spec}: {address}: unknown action \"{verdict}\"")
        return None
