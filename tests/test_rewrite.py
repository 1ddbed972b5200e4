"""pymaster.mail.rewrite: canonicalising addresses (trivial-rewrite's rewrite job)."""

import pytest

from pymaster.mail.config import Config
from pymaster.mail.rewrite import Rewriter, rewriter_for


def make_cfg(**values):
    base = {"myhostname": "mx.example.com", "mydomain": "example.com",
            "inet_interfaces": "loopback-only"}
    base.update(values)
    return Config("/nonexistent", base)


@pytest.mark.parametrize("addr, expected", [
    ("", ""),                                           # <> stays <>
    ("user", "user@mx.example.com"),                    # @$myorigin
    ("user@host", "user@host"),                         # append_dot_mydomain = no
    ("user@example.org", "user@example.org"),
    ("user@example.org.", "user@example.org"),          # trailing dot
    ("@a.example,@b.example:user@c.example", "user@c.example"),  # source route
    ("site!user", "user@site"),                         # swap_bangpath
    ("a!b!user", "b!user@a"),
    ("user%example.net", "user@example.net"),           # percent hack, no "@"
    # left for the resolver, which flags it as routed (never relayed by smtpd):
    ("user%example.net@localhost", "user%example.net@localhost"),
    ("user%example.net@elsewhere.example", "user%example.net@elsewhere.example"),
    ("User@EXAMPLE.org", "User@EXAMPLE.org"),           # case left alone
])
def test_local_context_defaults(addr, expected):
    assert Rewriter(make_cfg()).canonicalize(addr) == expected


@pytest.mark.parametrize("settings, addr, expected", [
    ({"myorigin": "example.com"}, "user", "user@example.com"),
    ({"append_at_myorigin": "no"}, "user", "user"),
    ({"append_dot_mydomain": "yes"}, "user@host", "user@host.example.com"),
    ({"append_dot_mydomain": "yes"}, "user@[192.0.2.1]", "user@[192.0.2.1]"),
    ({"append_dot_mydomain": "yes"}, "user", "user@mx.example.com"),
    ({"swap_bangpath": "no"}, "site!user", "site!user@mx.example.com"),
    ({"allow_percent_hack": "no"}, "user%example.net", "user%example.net@mx.example.com"),
    ({"allow_percent_hack": "no"}, "user%example.net@localhost", "user%example.net@localhost"),
])
def test_local_context_settings(settings, addr, expected):
    assert Rewriter(make_cfg(**settings)).canonicalize(addr, "local") == expected


def test_remote_context_without_rewrite_domain_changes_nothing():
    rw = Rewriter(make_cfg())
    assert rw.canonicalize("user", "remote") == "user"
    assert rw.canonicalize("site!user", "remote") == "site!user"


def test_remote_context_uses_remote_header_rewrite_domain():
    rw = Rewriter(make_cfg(remote_header_rewrite_domain="domain.invalid",
                           append_dot_mydomain="yes"))
    assert rw.canonicalize("user", "remote") == "user@domain.invalid"
    assert rw.canonicalize("user@host", "remote") == "user@host.domain.invalid"
    assert rw.canonicalize("user@example.org", "remote") == "user@example.org"


def test_unknown_context_is_a_programming_error():
    with pytest.raises(ValueError):
        Rewriter(make_cfg()).canonicalize("user", "elsewhere")


def test_rewriter_is_built_once_per_config():
    cfg = make_cfg()
    assert rewriter_for(cfg) is rewriter_for(cfg)
    assert rewriter_for(make_cfg()) is not rewriter_for(cfg)
