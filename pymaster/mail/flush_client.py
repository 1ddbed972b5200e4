"""Talking to the fast flush service (flush(8), services/flush.py).

Requests over the brokered endpoint of `flush_service_name` (master.cf
`flush unix n - n 1000? 0 flush`, so private/flush):

    {"op": "add", "site": S, "queue_id": ID}   log a deferred message for S
    {"op": "send_site", "site": S}             deliver what S's log lists (ETRN, postqueue -s)
    {"op": "send_file", "queue_id": ID}        deliver one deferred message (postqueue -i)
    {"op": "refresh"} / {"op": "wakeup"}       refresh old logs, delete long-empty ones
    {"op": "purge"}                            refresh every log (postqueue -f, sendmail -q)

Each answer is {"status": OK|FAIL|BAD|DENY}: BAD for a site or queue ID that
is not a valid name, DENY for a site that fast_flush_domains does not list.
FAIL is what a client makes of a service that does not answer.

Interface:
    OK, FAIL, BAD, DENY                         the reply statuses
    available(cfg) -> bool                      whether master.cf has the service
    FlushClient(cfg).available() -> bool          available(cfg)
    FlushClient(cfg).add(site, queue_id) -> bool   one-way: never waits
    FlushClient(cfg).request(header) -> status  a request and its answer
    valid_site(site) -> bool                    what may name a log file

Caveats: add() goes over a kept one-way socket (qmgr logs every deferred
recipient's domain; the answer is not worth a round trip), so a request that
cannot be queued is dropped, as Postfix drops an add it cannot deliver with a
warning; the next deferral of that message logs it again.
"""

from __future__ import annotations

import os
import re

from pymaster.mail import endpoints
from pymaster.mail.config import Config
from pymaster.util import ipc

OK, FAIL, BAD, DENY = "ok", "fail", "bad", "deny"
TIMEOUT = 60.0

# A host name, a domain name or an address literal; no "/", no leading dot,
# so it can name a file under flush/ as it is.
_SITE_RE = re.compile(r"^(\[[0-9A-Za-z.:]+\]|[0-9A-Za-z_-][0-9A-Za-z._-]*)$")


def valid_site(site: str) -> bool:
    """valid_site - whether SITE is a domain name or an address literal."""
    return 0 < len(site) <= 255 and bool(_SITE_RE.match(site)) and ".." not in site


def available(cfg: Config, queue_dir: str = "") -> bool:
    """available - whether the master offers the flush service (its socket exists)."""
    name = endpoints.service_name(cfg, "flush")
    return any(os.path.exists(os.path.join(queue_dir, vis, name)) for vis in ("private", "public"))


class FlushClient:
    """Requests to the flush service of one configuration."""

    def __init__(self, cfg: Config, timeout: float = TIMEOUT) -> None:
        self.cfg = cfg
        self.timeout = timeout
        self._oneway: ipc.OneWay | None = None

    def available(self) -> bool:
        return available(self.cfg)

    def add(self, site: str, queue_id: str) -> bool:
        """add - log QUEUE_ID as deferred for SITE; False when it had to be dropped."""
        if self._oneway is None:
            self._oneway = ipc.OneWay(endpoints.endpoint(self.cfg, "flush"))
        return self._oneway.send({"op": "add", "site": site.lower(), "queue_id": queue_id})

    def request(self, header: dict) -> str:
        """request - HEADER to the service; its status, FAIL when it does not answer."""
        client = ipc.Client(endpoints.endpoint(self.cfg, "flush"), timeout=self.timeout)
        try:
            reply, _ = client.call(header)
        except ipc.IpcError:
            return FAIL
        finally:
            client.close()
        status = reply.get("status")
        return status if status in (OK, BAD, DENY) else FAIL

    def send_site(self, site: str) -> str:
        return self.request({"op": "send_site", "site": site.lower()})

    def send_file(self, queue_id: str) -> str:
        return self.request({"op": "send_file", "queue_id": queue_id})

    def close(self) -> None:
        if self._oneway is not None:
            self._oneway.close()
            self._oneway = None
