"""The parameter table (pymaster.mail.params): Postfix's names, types and defaults."""

import re

import pytest

from pymaster.mail.params import PARAMS, param, service_params

TYPES = {"str", "bool", "int", "time", "size", "list"}


def test_the_table_holds_every_postfix_parameter():
    assert len(PARAMS) >= 800


def test_every_entry_is_well_formed():
    for name, p in PARAMS.items():
        assert re.fullmatch(r"[A-Za-z0-9_]+", name), name
        assert p.name == name
        assert p.type in TYPES, name
        if p.type == "time":
            assert p.unit in "smhdw", name
        if p.type == "bool" and p.default is not None:
            assert p.default in ("yes", "no") or p.default.startswith("$"), name


@pytest.mark.parametrize("name, default", [
    ("myorigin", "$myhostname"),
    ("mydestination", "$myhostname, localhost.$mydomain, localhost"),
    ("mynetworks_style", "host"),
    ("message_size_limit", "10240000"),
    ("smtpd_recipient_limit", "1000"),
    ("queue_run_delay", "300s"),
    ("minimal_backoff_time", "300s"),
    ("maximal_backoff_time", "4000s"),
    ("maximal_queue_lifetime", "5d"),
    ("smtpd_error_sleep_time", "1s"),
    ("smtpd_soft_error_limit", "10"),
    ("smtpd_hard_error_limit", "${stress?{1}:{20}}"),
    ("append_at_myorigin", "yes"),
    ("append_dot_mydomain", "no"),
    ("smtputf8_enable", "yes"),
    ("relay_domains", ""),
    ("smtpd_relay_restrictions",
     "permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination"),
    ("syslog_name", "${multi_instance_name?{$multi_instance_name}:{postfix}}"),
    ("alias_maps", "hash:/etc/aliases"),
    ("local_recipient_maps", "proxy:unix:passwd.byname $alias_maps"),
    ("virtual_alias_maps", "$virtual_maps"),
    ("smtpd_banner", "$myhostname ESMTP $mail_name"),
    ("default_process_limit", "100"),
    ("local_destination_recipient_limit", "1"),
    ("smtpd_expansion_filter",
     "\\t\\40!\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\\\]^_`"
     "abcdefghijklmnopqrstuvwxyz{|}~"),
])
def test_postfix_defaults(name, default):
    assert PARAMS[name].default == default


@pytest.mark.parametrize("name", ["myhostname", "mydomain", "mynetworks", "config_directory",
                                  "daemon_directory", "process_id"])
def test_machine_dependent_defaults_are_computed(name):
    assert PARAMS[name].default is None


def test_seed_areas_are_present():
    for name in ("smtpd_sasl_auth_enable", "smtpd_tls_cert_file", "smtp_tls_security_level",
                 "virtual_mailbox_maps", "virtual_uid_maps", "mailbox_command", "home_mailbox",
                 "canonical_maps", "masquerade_domains", "smtpd_client_restrictions",
                 "queue_minfree", "hash_queue_depth", "header_size_limit", "relayhost"):
        assert name in PARAMS, name


def test_types_and_units():
    assert PARAMS["biff"].type == "bool"
    assert (PARAMS["maximal_queue_lifetime"].type, PARAMS["maximal_queue_lifetime"].unit) == \
        ("time", "d")
    assert PARAMS["delay_warning_time"].unit == "h"
    assert PARAMS["queue_run_delay"].unit == "s"


def test_delivery_services_define_transport_parameters():
    names = {p.name: p.default for p in service_params("mypipe", "pipe")}
    assert names["mypipe_destination_concurrency_limit"] == \
        "$default_destination_concurrency_limit"
    assert names["mypipe_time_limit"] == "$command_time_limit"
    assert len(names) == 17
    assert "myrelay_time_limit" not in {p.name for p in service_params("myrelay", "smtp")}
    assert service_params("mycleanup", "cleanup") == []


def test_built_in_transport_parameters_are_not_repeated():
    names = {p.name for p in service_params("local", "local")}
    assert "local_destination_recipient_limit" not in names
    assert "local_delivery_slot_cost" in names


def test_param_answers_for_any_service_defined_name():
    assert param("whatever_destination_recipient_limit").default == \
        "$default_destination_recipient_limit"
    assert param("no_such_thing") is None


def test_the_parameter_reference_lists_every_parameter():
    from pymaster.commands import paramdoc
    text = paramdoc.render()
    assert all(f"| `{name}` |" in text for name in PARAMS)
    assert "| `myorigin` | str | `$myhostname` | the domain appended" in text
