"""Service endpoints by their main.cf names.

A client names an internal service by its role ("cleanup", "qmgr",
"pickup" …); main.cf may rename the service (`cleanup_service_name`,
`queue_service_name` …) and master.cf makes its socket public or private.
This module owns that mapping, so no caller restates a service name's
default: the defaults are in the parameter table (pymaster.mail.params).

Interface:
    service_name(cfg, role) -> str   the master.cf name of ROLE's service
    endpoint(cfg, role) -> str       its zeromq endpoint (public/ or private/)
"""

from __future__ import annotations

from pymaster.mail.config import Config
from pymaster.mail.params import PARAMS
from pymaster.util import ipc

# Roles whose parameter is not ROLE_service_name.
_PARAMETERS = {
    "qmgr": "queue_service_name",
    "verify": "address_verify_service_name",
}


def _parameter(role: str) -> str:
    """_parameter - the main.cf parameter that names ROLE's service."""
    return _PARAMETERS.get(role, f"{role}_service_name")


def service_name(cfg: Config | None, role: str) -> str:
    """service_name - ROLE's service name from CFG; the table's default
    when there is no configuration (a client built before main.cf is read)."""
    name = _parameter(role)
    if cfg is None:
        return PARAMS[name].default or ""
    return cfg.get(name)


def endpoint(cfg: Config | None, role: str) -> str:
    """endpoint - the endpoint of ROLE's service, as master.cf bound it."""
    return ipc.service_endpoint(service_name(cfg, role))
