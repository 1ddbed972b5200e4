"""proxy:TYPE:NAME: a table answered by the proxymap (or proxywrite) service.

A chrooted program cannot see /etc/passwd or /etc/postfix, and a database
connection per process multiplies connections: `proxy:unix:passwd.byname`
sends each lookup to the proxymap service (`private/proxymap`, not
chrooted), which opens TYPE:NAME once per process, keeps it open, and
answers. Updates (`update`, `delete`) go to the proxywrite service, the
same program under another name, run as a single process so that file
tables have one writer (proxymap(8)).

One request per lookup over the project's IPC layer; the connection is kept
for the life of the process (one per thread: a zeromq socket must not be
shared between threads, and smtpd asks from its check threads).

Requests and replies (JSON headers):
    {"op": "lookup", "table": "TYPE:NAME", "key": K [, "options": {...}]}
    {"op": "update", "table": ..., "key": K, "value": V}
    {"op": "delete", "table": ..., "key": K}
    -> {"status": "ok", "value": V}  found (update/delete: done)
       {"status": "noent"}           not found
       {"status": "retry", "reason"} the table cannot answer now
       {"status": "deny", "reason"}  not listed in proxy_read_maps/proxy_write_maps
       {"status": "bad", "reason"}   a malformed request
Everything but ok and noent is a TableError here: the caller defers (451),
it never crashes.

When no proxymap endpoint exists (a master.cf without the service, or a
command such as `postmap -q` run while the mail system is down), the table
is opened in this process instead, as if there were no proxy: prefix.

Interface:
    ProxyTable(type, name, cfg=None, write=False, **options)
                                     name is the inner TYPE:NAME; write=True: a
                                     table opened to be written, whose lookups
                                     go to proxywrite too (a proxy_write_maps
                                     table, such as address_verify_map)
        .lookup(key) -> str | None   .update(key, value)   .delete(key)
    LOOKUP_TIMEOUT                   seconds a request may wait for its answer
    close_clients()                  drop this thread's kept connections (tests)
"""

from __future__ import annotations

import os
import threading

from pymaster.util import ipc
from pymaster.util.tables import Table, TableError, create_table, split_spec, table_class

PREFIX = "proxy:"
LOOKUP_TIMEOUT = 60.0

_local = threading.local()


def _clients() -> dict[str, ipc.Client]:
    # A forked child must not use its parent's zeromq sockets: it starts afresh.
    clients = getattr(_local, "clients", None)
    if clients is None or _local.pid != os.getpid():
        clients = _local.clients = {}
        _local.pid = os.getpid()
    return clients


def close_clients() -> None:
    """close_clients - close this thread's kept proxymap connections."""
    for client in _clients().values():
        client.close()
    _clients().clear()


def inner_spec(name: str) -> str:
    """inner_spec - TYPE:NAME without any further proxy: prefixes."""
    while name.startswith(PREFIX):
        name = name[len(PREFIX):]
    return name


def find_endpoint(service: str, queue_dir: str) -> str | None:
    """find_endpoint - where SERVICE listens, or None when it does not.

    Outside a jail the queue directory's absolute path is used (a command's
    working directory is anywhere); inside a chroot jail, whose root is the
    queue directory, the path relative to it (every service works there)."""
    candidates = []
    for visibility in ("private", "public"):
        if queue_dir:
            candidates.append(os.path.join(queue_dir, visibility, service))
        candidates.append(os.path.join(visibility, service))
    for path in candidates:
        # A socket we may not write to (private/ of another user) is no service
        # to us: zeromq would wait for it forever instead of failing.
        if os.path.exists(path) and os.access(path, os.W_OK):
            return path
    return None


class ProxyTable(Table):
    """proxy:TYPE:NAME, answered by the proxymap service."""

    remote = True

    def __init__(self, type_: str, name: str, cfg=None, write: bool = False,
                 **options) -> None:
        super().__init__(type_, name, cfg)
        self.write = write
        self.inner = inner_spec(name.strip())
        inner_type, _ = split_spec(self.inner)
        # The reply of a lookup carries no flags: whether the inner table is
        # a pattern table follows from its type.
        self.fixed = bool(getattr(table_class(inner_type), "fixed", True))
        self.options = options
        self._direct: Table | None = None
        self._endpoints: dict[bool, str] = {}   # write? -> the endpoint found

    @property
    def spec(self) -> str:
        return f"{PREFIX}{self.inner}"

    def _endpoint(self, write: bool) -> str | None:
        """_endpoint - the proxymap (or proxywrite) endpoint; None without a
        configuration, which names neither service nor queue directory.

        Found once: the master keeps the socket where it is for as long as it
        runs, and four stat calls per lookup would be paid on every RCPT."""
        if write in self._endpoints:
            return self._endpoints[write]
        if self.cfg is None:
            return None
        service = self.cfg.get("proxywrite_service_name" if write else "proxymap_service_name")
        found = find_endpoint(service, self.cfg.get("queue_directory"))
        if found is not None:
            self._endpoints[write] = found
        return found

    def _in_process(self) -> Table:
        if self._direct is None:
            self._direct = create_table(self.inner, self.cfg, **self.options)
        return self._direct

    def _call(self, endpoint: str, header: dict) -> dict:
        clients = _clients()
        client = clients.get(endpoint)
        if client is None:
            client = clients[endpoint] = ipc.Client(endpoint, LOOKUP_TIMEOUT)
        try:
            reply, _ = client.call(header)
        except ipc.IpcError as e:
            raise TableError(f"{self.spec}: {e}") from None
        status = reply.get("status")
        if status in ("ok", "noent"):
            return reply
        reason = reply.get("reason") or f"status {status}"
        raise TableError(f"{self.spec}: {reason}")

    def lookup(self, key: str) -> str | None:
        endpoint = self._endpoint(write=self.write)
        if endpoint is None:
            return self._in_process().lookup(key)
        header: dict[str, object] = {"op": "lookup", "table": self.inner, "key": key}
        if self.options:
            header["options"] = self.options
        reply = self._call(endpoint, header)
        return reply.get("value") if reply["status"] == "ok" else None

    def update(self, key: str, value: str) -> None:
        """update - store VALUE under KEY through the proxywrite service."""
        self._write({"op": "update", "table": self.inner, "key": key, "value": value})

    def delete(self, key: str) -> bool:
        """delete - remove KEY through the proxywrite service; False when absent."""
        reply = self._write({"op": "delete", "table": self.inner, "key": key})
        return reply.get("status") == "ok"

    def _write(self, header: dict) -> dict:
        endpoint = self._endpoint(write=True)
        if endpoint is None:
            table = self._in_process()
            method = getattr(table, header["op"], None)
            if method is None:
                raise TableError(f"{self.inner}: table does not support updates")
            args = (header["key"], header["value"]) if header["op"] == "update" \
                else (header["key"],)
            found = method(*args)
            return {"status": "noent" if found is False else "ok"}
        return self._call(endpoint, header)
