"""postscreen: the zombie blocker in front of smtpd, as Postfix's postscreen(8).

    server.py     the process: accepting clients on the master's listener
    session.py    one client: access list, cache, the tests, the hand-off to smtpd
    smtp.py       postscreen's own SMTP engine (deep protocol tests, enforced rejections)
    dnsbl.py      asking the dnsblog service, scoring the answers
    access.py     postscreen_access_list
    cache.py      postscreen_cache_map: the results that let a client pass at once
    load.py       the pre-queue and per-client limits, stress mode
    proxy.py      the haproxy PROXY v1 header
    conn.py       the client connection: peeked and buffered input
    settings.py   main.cf's postscreen_* parameters
    replies.py    every reply text and log line shape

master.cf (Debian's, uncommented):

    smtp      inet  n  -  y  -  1  postscreen
    smtpd     pass  -  -  y  -  -  smtpd
    dnsblog   unix  -  -  y  -  0  dnsblog
    tlsproxy  unix  -  -  y  -  0  tlsproxy

A client that passes goes to the `smtpd` pass service (smtpd_service_name)
with its open connection (pymaster.master.handoff); smtpd serves it as if it
had accepted it.

Interface:
    main()                     the body of libexec/postscreen
    pre_jail(svc) -> Context   tables, the cache and the resolver opened before the jail
"""

from __future__ import annotations

import asyncio

# Loaded now: after the chroot or the privilege drop the interpreter's
# library may be out of reach.
import concurrent.futures.thread  # noqa: F401  (run_in_executor: the hand-off)
import os

import zmq.asyncio

from pymaster.master import cachefile, service
from pymaster.util import ipc, log

from .access import AccessList
from .cache import CacheError, ClientCache
from .load import Load
from .server import Server
from .session import Context
from .settings import Settings


def open_cache(cfg) -> ClientCache:
    """open_cache - postscreen_cache_map, or a memory cache when it cannot open."""
    spec = cfg.get("postscreen_cache_map")
    try:
        path = cachefile.sqlite_path("postscreen_cache_map", spec)
        if path is None:
            return ClientCache(None)
        cachefile.make_data_directory(cfg, os.path.dirname(path))
        with cachefile.as_mail_owner(cfg):
            return ClientCache(path, spec.strip())
    except (cachefile.CacheFileError, CacheError, OSError) as e:
        log.warning(f"{e}: using a cache in memory")
        return ClientCache(None)


def pre_jail(svc: service.Service) -> Context:
    cfg = svc.cfg
    try:
        settings = Settings.from_config(cfg)
        stress_settings = Settings.from_config(cfg.with_overrides({"stress": "yes"}))
    except ValueError as e:
        log.fatal(str(e))
    access = AccessList.from_config(cfg, settings.access_list)
    endpoint = ipc.endpoint("private", cfg.get("dnsblog_service_name"))
    context = zmq.asyncio.Context.shadow(ipc.context())
    load = Load(cfg.int("postscreen_pre_queue_limit"),
                cfg.int("postscreen_client_connection_count_limit"))
    return Context(settings, stress_settings, open_cache(cfg), access, endpoint, context, load)


def run(svc: service.Service) -> None:
    ctx = svc.enter_jail(pre_jail)
    asyncio.run(Server(svc, ctx).serve())


def main() -> None:
    service.main("postscreen", run)
