"""master_service_disable: which master.cf services the master leaves off."""

from __future__ import annotations

import pytest

from pymaster.master.daemon import service_disabled
from pymaster.master.mastercf import MasterEntry


def entry(service: str, type_: str) -> MasterEntry:
    return MasterEntry(service, type_, False, True, False, 0, False, 100, "smtpd")


@pytest.mark.parametrize("patterns, service, type_, disabled", [
    ([], "smtp", "inet", False),
    (["inet"], "smtp", "inet", True),
    (["inet"], "127.0.0.1:2525", "inet", True),
    (["inet"], "cleanup", "unix", False),
    (["smtp/inet"], "smtp", "inet", True),
    (["smtp/inet"], "submission", "inet", False),
    (["smtp.inet"], "smtp", "inet", True),            # the Postfix 2.6-2.10 spelling
    (["127.0.0.1:2525/inet"], "127.0.0.1:2525", "inet", True),
    (["SMTP/INET"], "smtp", "inet", True),
    (["!foo/inet", "inet"], "foo", "inet", False),    # the first match decides
    (["!foo/inet", "inet"], "smtp", "inet", True),
    (["unix"], "cleanup", "unix", True),
    (["all"], "smtp", "inet", False),                 # no wildcards, on purpose
    (["*"], "smtp", "inet", False),
])
def test_service_disabled(patterns, service, type_, disabled):
    assert service_disabled(entry(service, type_), patterns) is disabled
