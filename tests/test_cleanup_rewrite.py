"""cleanup's address rewriting: canonical maps per class, masquerading, automatic
copies (always_bcc, sender_bcc_maps, recipient_bcc_maps) and whose headers change."""

import pytest

from services.cleanup.masquerade import masquerade_domain
from tests.test_cleanup import make_cfg, queued, spool, submit  # noqa: F401

CONTENT = ("From: Fred <fwx@example.com>\nReply-To: fwx@example.com\n"
           "To: joe@host.example.com\nSubject: x\n\nbody\n")


def headers(msg) -> str:
    return msg.read_content().decode().partition("\n\n")[0]


class TestMasqueradeDomain:
    @pytest.mark.parametrize("domain,entries,expected", [
        ("host.example.com", ["example.com"], "example.com"),
        ("a.b.example.com", ["example.com"], "example.com"),
        ("example.com", ["example.com"], None),                  # never itself
        ("otherexample.com", ["example.com"], None),             # a label boundary
        ("host.example.com", ["b.com", "example.com"], "example.com"),
        ("a.sub.example.com", ["!sub.example.com", "example.com"], None),
        ("sub.example.com", ["!sub.example.com", "example.com"], None),
        ("other.example.com", ["!sub.example.com", "example.com"], "example.com"),
        ("x.a.example.com", ["a.example.com", "example.com"], "a.example.com"),
        ("Host.EXAMPLE.com", ["example.com"], "example.com"),
    ])
    def test_first_parent_in_the_list_wins(self, domain, entries, expected):
        assert masquerade_domain(domain, entries) == expected


class TestCanonical:
    def test_canonical_maps_rewrite_envelope_and_headers_of_local_mail(self, spool):  # noqa: F811
        cfg = make_cfg(spool, canonical_maps="inline:{ fwx@example.com=kdent@example.com }")
        msg = queued(submit(cfg, CONTENT, sender="fwx@example.com", context="local"))
        assert msg.sender == "kdent@example.com"
        head = headers(msg)
        assert "From: Fred <kdent@example.com>" in head
        assert "Reply-To: kdent@example.com" in head

    def test_remote_mail_keeps_its_headers(self, spool):  # noqa: F811
        cfg = make_cfg(spool, canonical_maps="inline:{ fwx@example.com=kdent@example.com }")
        msg = queued(submit(cfg, CONTENT, sender="fwx@example.com", context="remote"))
        assert msg.sender == "kdent@example.com"
        assert "From: Fred <fwx@example.com>" in headers(msg)

    def test_remote_header_rewrite_domain_turns_remote_rewriting_on(self, spool):  # noqa: F811
        cfg = make_cfg(spool, canonical_maps="inline:{ fwx@example.com=kdent@example.com }",
                       remote_header_rewrite_domain="domain.invalid")
        msg = queued(submit(cfg, CONTENT.replace("joe@host.example.com", "joe"),
                            sender="fwx@example.com", context="remote"))
        head = headers(msg)
        assert "From: Fred <kdent@example.com>" in head and "To: joe@domain.invalid" in head

    def test_classes_limit_where_a_map_applies(self, spool):  # noqa: F811
        cfg = make_cfg(spool, sender_canonical_maps="inline:{ fwx@example.com=kdent@example.com }",
                       sender_canonical_classes="envelope_sender")
        msg = queued(submit(cfg, CONTENT, sender="fwx@example.com", context="local"))
        assert msg.sender == "kdent@example.com"
        assert "From: Fred <fwx@example.com>" in headers(msg)

    def test_recipient_canonical_maps_rewrite_recipients_not_senders(self, spool):  # noqa: F811
        cfg = make_cfg(spool, recipient_canonical_maps="inline:{ fwx@example.com=kdent@example.com,"
                                                       " joe@host.example.com=joe@example.com }")
        msg = queued(submit(cfg, CONTENT, sender="fwx@example.com",
                            recipients=["fwx@example.com"], context="local"))
        assert msg.sender == "fwx@example.com"
        assert [(r.address, r.orig) for r in msg.recipients] == \
            [("kdent@example.com", "fwx@example.com")]
        assert "To: joe@example.com" in headers(msg)

    def test_no_address_mappings_leaves_addresses_alone(self, spool):  # noqa: F811
        cfg = make_cfg(spool, canonical_maps="inline:{ fwx@example.com=kdent@example.com }")
        msg = queued(submit(cfg, CONTENT, sender="fwx@example.com", context="local",
                            flags=["no_address_mappings"]))
        assert msg.sender == "fwx@example.com"


class TestMasquerading:
    def cfg(self, spool, **extra):  # noqa: F811
        return make_cfg(spool, masquerade_domains="!keep.example.com, example.com", **extra)

    def test_sender_and_headers_are_masqueraded_recipients_are_not(self, spool):  # noqa: F811
        msg = queued(submit(self.cfg(spool), CONTENT.replace("fwx@example.com", "fwx@a.example.com"),
                            sender="fwx@a.example.com", recipients=["joe@host.example.com"],
                            context="local"))
        assert msg.sender == "fwx@example.com"
        assert msg.recipients[0].address == "joe@host.example.com"
        head = headers(msg)
        assert "From: Fred <fwx@example.com>" in head and "To: joe@example.com" in head

    def test_excluded_domains_and_exception_names_stay(self, spool):  # noqa: F811
        cfg = self.cfg(spool, masquerade_exceptions="root")
        msg = queued(submit(cfg, "Subject: x\n\nb\n", sender="root@a.example.com", context="local"))
        assert msg.sender == "root@a.example.com"
        msg = queued(submit(cfg, "Subject: x\n\nb\n", sender="u@x.keep.example.com", context="local"))
        assert msg.sender == "u@x.keep.example.com"

    def test_masquerade_classes_may_include_the_envelope_recipient(self, spool):  # noqa: F811
        cfg = self.cfg(spool, masquerade_classes="envelope_recipient")
        msg = queued(submit(cfg, "Subject: x\n\nb\n", sender="s@a.example.com",
                            recipients=["joe@host.example.com"], context="local"))
        assert msg.sender == "s@a.example.com"
        assert msg.recipients[0].address == "joe@example.com"


class TestAutomaticCopies:
    def cfg(self, spool, **extra):  # noqa: F811
        return make_cfg(spool, always_bcc="archive@example.com",
                        sender_bcc_maps="inline:{ boss@example.com=boss-out@example.com }",
                        recipient_bcc_maps="inline:{ @sales.example.com=sales-in@example.com }",
                        **extra)

    def test_each_map_adds_its_copy(self, spool):  # noqa: F811
        msg = queued(submit(self.cfg(spool), "Subject: x\n\nb\n", sender="boss@example.com",
                            recipients=["ann@sales.example.com", "bob@example.net"]))
        assert [r.address for r in msg.recipients] == [
            "ann@sales.example.com", "bob@example.net", "sales-in@example.com",
            "boss-out@example.com", "archive@example.com"]

    def test_copies_are_not_made_for_forwarded_or_generated_mail(self, spool):  # noqa: F811
        for origin in ("local", "bounce"):
            msg = queued(submit(self.cfg(spool), "Subject: x\n\nb\n", sender="boss@example.com",
                                recipients=["ann@sales.example.com"], origin=origin))
            assert [r.address for r in msg.recipients] == ["ann@sales.example.com"]

    def test_copies_go_through_virtual_aliases(self, spool):  # noqa: F811
        cfg = self.cfg(spool, virtual_alias_maps="inline:{ archive@example.com=a1@example.net }")
        msg = queued(submit(cfg, "Subject: x\n\nb\n", recipients=["bob@example.net"]))
        assert [r.address for r in msg.recipients] == ["bob@example.net", "a1@example.net"]


class TestPlainAddressShortcut:
    """A header value that is one plain address skips the tokenizer only
    when the tokenizer would have found exactly that address."""

    @pytest.mark.parametrize("value", [
        "a@example.com", "<a@example.com>", "first.last+tag@mail.example.org",
        "<x_y-z=1@sub.example>", "user@localhost", "<ü@bücher.example>",
    ])
    def test_a_plain_address_is_what_the_parser_finds(self, value):
        from pymaster.mail.addr import parse_address_list
        from services.cleanup.headers import _plain_address
        [box] = parse_address_list(value)
        assert _plain_address(value) == box.address and box.name == ""

    @pytest.mark.parametrize("value", [
        "Fred <a@example.com>", "a@example.com (Fred)", '"a b"@example.com',
        "a@example.com, b@example.com", "<a@example.com", "a@example.com>",
        "a@[192.0.2.1]", "friends: a@example.com;", "a", "a@b@c", "a@example.com ",
        "<@relay.example:a@example.com>", "a .b@example.com",
    ])
    def test_anything_else_takes_the_full_parse(self, value):
        from services.cleanup.headers import _plain_address
        assert _plain_address(value) is None

    def test_a_plain_address_that_needs_completing_is_still_rewritten(self, spool):  # noqa: F811
        cfg = make_cfg(spool, mydomain="example.com", append_dot_mydomain="yes")
        content = "From: <fwx@host>\nTo: joe@host.example.com\nCc: <ann@host>\n\nbody\n"
        head = headers(queued(submit(cfg, content, sender="fwx@example.com", context="local")))
        assert "From: fwx@host.example.com\n" in head
        assert "To: joe@host.example.com\n" in head
        assert "Cc: ann@host.example.com\n" in head

    def test_a_rewritten_plain_address_is_looked_up_once(self, spool, monkeypatch):  # noqa: F811
        from services.cleanup.envelope import Mapper
        cfg = make_cfg(spool, canonical_maps="inline:{ fwx@example.com=kdent@example.com }")
        asked: list[tuple[str, str]] = []
        real = Mapper.canonical_address
        monkeypatch.setattr(Mapper, "canonical_address",
                            lambda self, addr, klass: (asked.append((addr, klass)),
                                                       real(self, addr, klass))[1])
        content = "From: <fwx@example.com>\nTo: joe@host.example.com\n\nbody\n"
        head = headers(queued(submit(cfg, content, sender="a@example.org", context="local")))
        assert "From: kdent@example.com\n" in head
        assert asked.count(("fwx@example.com", "header_sender")) == 1
