#!/usr/bin/env python3
"""echo - a service program for the master's tests, run through master.cf.

As a request service (unix/fifo: leases on descriptor 3) it answers requests:

  {"op": "whoami"}               pid, uid, gid, groups, chrooted, cwd, args, name
  {"op": "sleep", "seconds": S}  logs `echo NAME: sleeping`, answers after S seconds
                                 (keeps a worker busy; tests wait for the line)
  {"op": "exit", "status": N}    die in the middle of a request
  {"op": "param", "name": P}     the value of main.cf parameter P as it sees it
  {"op": "wakeup"}               logs `echo NAME: wakeup` (the master's triggers,
                                 one-way: nobody reads the answer)
  {"op": "flush"}                logs `echo NAME: flush` (`postfix flush`)

As an inet service it accepts on descriptor 3 and, per line received,
answers `pid=P uid=U gid=G chrooted=yes|no`; it keeps the connection until
the client sends `quit` or closes it.

Arguments (master.cf, after the command): `crash` exits with status 1
before serving anything (a bad command startup).
"""

import os
import sys
import time

from pymaster.master import service
from pymaster.util import log


def identity(svc: service.Service) -> dict:
    """identity - who and where this process is, as the tests check it."""
    return {"pid": os.getpid(), "uid": os.getuid(), "gid": os.getgid(),
            "groups": os.getgroups(), "cwd": os.getcwd(), "args": svc.args,
            "name": svc.name, "type": svc.type,
            # Inside the jail the root is the queue directory.
            "chrooted": os.path.isdir("/pid") and os.path.isdir("/private")}


def handle(svc: service.Service, header: dict, payload: list) -> tuple[dict, list]:
    op = header.get("op")
    if op == "sleep":
        log.info(f"echo {svc.name}: sleeping")
        time.sleep(float(header.get("seconds", 1)))
    elif op == "exit":
        os._exit(int(header.get("status", 1)))
    elif op in ("wakeup", "flush"):
        log.info(f"echo {svc.name}: {op}")
    elif op == "param":
        return {"status": "ok", "value": svc.cfg.get(header["name"])}, []
    return {"status": "ok", **identity(svc)}, payload


def converse(svc: service.Service, conn, addr) -> None:
    with conn.makefile("rwb") as stream:
        for line in stream:
            if line.strip() == b"quit":
                break
            me = identity(svc)
            stream.write(f"pid={me['pid']} uid={me['uid']} gid={me['gid']} "
                         f"chrooted={'yes' if me['chrooted'] else 'no'}\n".encode())
            stream.flush()


def pre_jail(svc: service.Service) -> None:
    """pre_jail - echo opens nothing."""


def run(svc: service.Service) -> None:
    if "crash" in svc.args:
        log.error(f"echo {svc.name}: crashing on purpose")
        sys.exit(1)
    svc.enter_jail(pre_jail)
    if svc.type == "inet":
        svc.serve_connections(lambda conn, addr: converse(svc, conn, addr))
    else:
        svc.serve_requests(lambda header, payload: handle(svc, header, payload))


if __name__ == "__main__":
    service.main("echo", run)
