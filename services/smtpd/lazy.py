"""smtpd's optional heavy dependencies, each behind one accessor.

dnspython costs tens of milliseconds at every start and only DNS lists,
check_*_{mx,ns}_access and reject_unknown_* need it; cryptography's X.509
code and the password store's KDF are only needed when this smtpd offers TLS or
AUTH. Each is imported on first call of its accessor, so a process that
does not use it starts faster; pre_jail calls the accessors the
configuration needs, because after the chroot the interpreter's library may
be out of reach.

Interface:
    dns() -> module            pymaster.util.dns (dnspython)
    tls_crypto() -> None       what certificate names and fingerprints load lazily
    sasl_backends() -> None    the scrypt KDF of the built-in password store
"""

from __future__ import annotations

import hashlib
from types import ModuleType

from pymaster.mail import tlsutil

# The imports below sit inside their accessors on purpose: each is the one
# place its heavy dependency is loaded, and only when the configuration needs it.


def dns() -> ModuleType:
    """dns - pymaster.util.dns (dnspython), imported on first use."""
    from pymaster.util import dns as dns_module
    return dns_module


def tls_crypto() -> None:
    """tls_crypto - load the certificate code that pymaster.mail.tlsutil uses
    (cert_names, pkey_fingerprint)."""
    tlsutil.x509_support()


def sasl_backends() -> None:
    """sasl_backends - load OpenSSL's KDF provider, which the built-in password
    store's scrypt hashes need and a jailed process could not load later."""
    hashlib.scrypt(b"", salt=b"0", n=2, r=1, p=1)
