"""The SASL server that smtpd_sasl_type names: Dovecot's, or the built-in store.

Interface:
    open_server(cfg) -> BuiltinServer | DovecotServer   raises SaslError
"""

from __future__ import annotations

from pymaster.mail.config import Config
from pymaster.mail.sasl.builtin import BuiltinServer
from pymaster.mail.sasl.dovecot import DovecotServer
from pymaster.mail.sasl.steps import SaslError
from pymaster.util import log


def open_server(cfg: Config) -> BuiltinServer | DovecotServer:
    """open_server - the SASL server smtpd_sasl_type names.

    `cyrus` (Postfix's default) has no Cyrus library behind it here: it
    means the built-in store, with a note in the log, so a main.cf written
    for Postfix works once saslpasswd2 has created the users."""
    kind = cfg.get("smtpd_sasl_type").strip().lower() or "cyrus"
    if kind == "dovecot":
        return DovecotServer(cfg.get("smtpd_sasl_path"), cfg.get("smtpd_sasl_service"))
    if kind not in ("pymaster", "cyrus"):
        raise SaslError(f"unsupported SASL server implementation: {kind}")
    if kind == "cyrus":
        log.info(f"smtpd_sasl_type = cyrus: using the built-in password store "
                 f"{cfg.get('smtpd_sasl_db')}")
    return BuiltinServer(cfg.get("smtpd_sasl_db"), cfg.get("smtpd_sasl_local_domain"))
