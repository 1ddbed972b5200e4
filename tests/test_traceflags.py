"""trace_flags: which words make a verify request, a probe, a recorded delivery,
and which a user's own submission may carry."""

import pytest

from pymaster.mail import traceflags


@pytest.mark.parametrize("flags, probe", [("verify,probe", True), ("verify probe", True),
                                          ("verify", False), ("probe", False), ("", False)])
def test_a_probe_is_known_by_its_trace_flags(flags, probe):
    assert traceflags.is_probe({"trace_flags": flags}) is probe


def test_verify_and_record_are_words_of_the_attribute():
    attrs = {"trace_flags": "record, verify"}
    assert traceflags.of(attrs) == {"record", "verify"}
    assert traceflags.is_verify(attrs) and traceflags.is_record(attrs)
    assert not traceflags.is_verify({}) and not traceflags.is_record({"trace_flags": "verify"})


def test_a_user_may_ask_for_verify_and_record_only():
    assert traceflags.user_flags("verify,probe,record") == "verify,record"
    assert traceflags.user_flags("probe") == ""
