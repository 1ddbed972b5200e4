"""main.cf: the file format, `$name` expansion and typed values (pymaster.mail.config)."""

import os

import pytest

from pymaster.mail.config import Config, ConfigError, load_config, parse_main_cf, parse_time
from pymaster.util.strings import split_list


def config(text: str = "", directory: str = "/etc/postfix", **overrides) -> Config:
    entries, errors = parse_main_cf(text, f"{directory}/main.cf")
    assert errors == []
    return Config(directory, {e.name: e.value for e in entries}, overrides, entries)


class TestFileFormat:
    def test_name_value_with_blanks_and_comments(self):
        entries, errors = parse_main_cf(
            "# comment\n\nmyhostname = mx.example.com\n  # not a continuation\n"
            "relayhost=[smtp.example.com]:587\n", "main.cf")
        assert errors == []
        assert [(e.name, e.value, e.lineno) for e in entries] == [
            ("myhostname", "mx.example.com", 3), ("relayhost", "[smtp.example.com]:587", 5)]

    def test_continuation_lines_join_with_one_space(self):
        entries, _ = parse_main_cf(
            "mydestination = a,\n    b,\n\t c\nnext = 1\n", "main.cf")
        assert entries[0].value == "a, b, c"
        assert (entries[0].lineno, entries[0].last_lineno) == (1, 3)

    def test_a_comment_inside_a_continued_value_is_skipped(self):
        entries, _ = parse_main_cf("a = one\n# note\n  two\n", "main.cf")
        assert entries[0].value == "one two"

    def test_hash_after_a_value_is_part_of_the_value(self):
        entries, _ = parse_main_cf("a = x # y\n", "main.cf")
        assert entries[0].value == "x # y"

    def test_empty_value(self):
        entries, _ = parse_main_cf("relayhost =\n", "main.cf")
        assert entries[0].value == ""

    def test_later_line_wins(self):
        cfg = config("a = 1\na = 2\n")
        assert cfg["a"] == "2"

    @pytest.mark.parametrize("text, message", [
        ("just words\n", "/x/main.cf, line 1: missing '=' after attribute name: \"just words\""),
        ("ok = 1\n  leading = 1\n", None),
        ("  leading = 1\n", "/x/main.cf, line 1: text starts with white space"),
        ("bad name! = 1\n", "/x/main.cf, line 1: bad parameter name"),
    ])
    def test_bad_lines_are_reported_with_file_and_line(self, text, message):
        _, errors = parse_main_cf(text, "/x/main.cf")
        if message is None:
            assert errors == []
        else:
            assert errors and errors[0].startswith(message)

    def test_load_config_reports_the_first_bad_line(self, tmp_path):
        (tmp_path / "main.cf").write_text("a = 1\noops\n")
        with pytest.raises(ConfigError, match=r"main.cf, line 2: missing '='"):
            load_config(str(tmp_path))

    def test_missing_main_cf(self, tmp_path):
        with pytest.raises(ConfigError, match="No such file or directory"):
            load_config(str(tmp_path / "nowhere"))


class TestConfigDirectory:
    def test_explicit_directory_wins_over_mail_config(self, tmp_path, monkeypatch):
        (tmp_path / "main.cf").write_text("myhostname = a.example\n")
        monkeypatch.setenv("MAIL_CONFIG", "/nonexistent")
        assert load_config(str(tmp_path))["myhostname"] == "a.example"

    def test_mail_config_chooses_the_directory(self, tmp_path, monkeypatch):
        (tmp_path / "main.cf").write_text("myhostname = b.example\n")
        monkeypatch.setenv("MAIL_CONFIG", str(tmp_path))
        cfg = load_config()
        assert cfg["myhostname"] == "b.example"
        assert cfg["config_directory"] == str(tmp_path)

    def test_daemon_directory_defaults_to_the_project_libexec(self):
        assert config()["daemon_directory"].endswith(os.sep + "libexec")

    def test_directory_paths_are_normalised(self, tmp_path):
        cfg = config("queue_directory = $config_directory/../spool\n"
                     "base = $queue_directory/mailboxes\n", directory=str(tmp_path / "etc"))
        assert cfg["queue_directory"] == str(tmp_path / "spool")
        assert cfg["base"] == str(tmp_path / "spool" / "mailboxes")


class TestExpansion:
    def test_forms_of_reference(self):
        cfg = config("a = x\nb = $a ${a} $(a)\n")
        assert cfg["b"] == "x x x"

    def test_expansion_is_lazy_and_sees_later_definitions(self):
        cfg = config("b = [$a]\na = late\n")
        assert cfg["b"] == "[late]"

    def test_defaults_refer_to_main_cf(self):
        cfg = config("myhostname = mx.example.com\n")
        assert cfg["myorigin"] == "mx.example.com"
        assert cfg["mydomain"] == "example.com"
        assert cfg["mydestination"] == "mx.example.com, localhost.example.com, localhost"

    @pytest.mark.parametrize("value, expected", [
        ("${set?yes}", "yes"), ("${unset?yes}", ""), ("${empty?yes}", ""),
        ("${set:no}", ""), ("${unset:no}", "no"), ("${empty:no}", "no"),
        ("${set?{a b}:{c}}", "a b"), ("${unset?{a b}:{c}}", "c"),
        ("${unset:{x y}}", "x y"),
        ("${set?$set-$set}", "v-v"),
    ])
    def test_conditional_forms(self, value, expected):
        cfg = config(f"set = v\nempty =\nr = {value}\n")
        assert cfg["r"] == expected

    def test_either_branch_by_whether_a_parameter_is_set(self):
        banner = "${relayhost?relay via $relayhost}${relayhost:direct}"
        assert config(f"relayhost = [gw.example.com]\nsmtpd_banner = {banner}\n"
                      )["smtpd_banner"] == "relay via [gw.example.com]"
        assert config(f"smtpd_banner = {banner}\n")["smtpd_banner"] == "direct"

    def test_relational_forms(self):
        cfg = config("n = 3\nlevel = 3.6\n"
                     "a = ${{$n} == {3} ? {eq} : {ne}}\n"
                     "b = ${{$n} > {10} ? {big} : {small}}\n"
                     "c = ${{$level} <level {2} ? {old} : {new}}\n"
                     "d = ${{$n} != {3} ? {x}}\n")
        assert (cfg["a"], cfg["b"], cfg["c"], cfg["d"]) == ("eq", "small", "new", "")

    def test_double_dollar_is_a_literal_dollar(self):
        assert config("a = cost $$5\n")["a"] == "cost $5"

    def test_unknown_reference_is_empty(self):
        assert config("a = <$nosuch>\n")["a"] == "<>"

    def test_recursive_definition_is_an_error(self):
        cfg = config("a = $b\nb = x$a\n")
        with pytest.raises(ConfigError, match="recursive definition of parameter \"a\""):
            cfg.get("a")

    def test_unbalanced_brace_is_an_error(self):
        with pytest.raises(ConfigError, match="missing '}'"):
            config("a = ${b\n").get("a")

    def test_overrides_win_and_may_refer_to_main_cf(self):
        cfg = config("other = from-main\nsyslog_name = postfix\n",
                     syslog_name="postfix/$other")
        assert cfg["syslog_name"] == "postfix/from-main"
        assert cfg.with_overrides({"other": "o"})["syslog_name"] == "postfix/o"

    def test_service_defined_parameters_default_to_the_global_ones(self):
        cfg = config("default_destination_concurrency_limit = 7\n")
        assert cfg.int("mytransport_destination_concurrency_limit") == 7
        assert cfg.time("mypipe_time_limit") == 1000


class TestTypes:
    @pytest.mark.parametrize("value, expected", [("yes", True), ("no", False),
                                                 ("YES", True), ("No", False)])
    def test_bool(self, value, expected):
        assert config(f"biff = {value}\n").bool("biff") is expected

    def test_bad_bool(self):
        with pytest.raises(ConfigError, match="bad boolean configuration: biff = maybe"):
            config("biff = maybe\n").bool("biff")

    def test_int_and_defaults(self):
        cfg = config()
        assert cfg.int("message_size_limit") == 10240000
        assert cfg.int("smtpd_recipient_limit") == 1000
        assert cfg.int("smtpd_soft_error_limit") == 10
        assert cfg.int("smtpd_hard_error_limit") == 20

    def test_bad_int(self):
        with pytest.raises(ConfigError, match="bad numerical configuration"):
            config("smtpd_recipient_limit = lots\n").int("smtpd_recipient_limit")

    @pytest.mark.parametrize("value, seconds", [
        ("30", 30), ("30s", 30), ("2m", 120), ("1h", 3600), ("5d", 432000), ("1w", 604800)])
    def test_time_units(self, value, seconds):
        assert parse_time(value) == seconds

    def test_bare_time_uses_the_parameters_unit(self):
        assert config("maximal_queue_lifetime = 2\n").time("maximal_queue_lifetime") == 2 * 86400
        assert config("delay_warning_time = 4\n").time("delay_warning_time") == 4 * 3600
        assert config("queue_run_delay = 10\n").time("queue_run_delay") == 10

    def test_time_defaults(self):
        cfg = config()
        assert cfg.time("queue_run_delay") == 300
        assert cfg.time("minimal_backoff_time") == 300
        assert cfg.time("maximal_backoff_time") == 4000
        assert cfg.time("maximal_queue_lifetime") == 5 * 86400
        assert cfg.time("smtpd_error_sleep_time") == 1

    def test_bad_time(self):
        with pytest.raises(ConfigError, match="bad time configuration: queue_run_delay = soon"):
            config("queue_run_delay = soon\n").time("queue_run_delay")

    def test_size(self):
        assert config("message_size_limit = 0\n").size("message_size_limit") == 0

    def test_list_separators_and_tables(self):
        assert split_list("a, b  c,d\n e") == ["a", "b", "c", "d", "e"]
        assert config("virtual_alias_maps = hash:/etc/postfix/virtual, regexp:/x\n") \
            .list("virtual_alias_maps") == ["hash:/etc/postfix/virtual", "regexp:/x"]

    def test_braced_list_elements_stay_whole(self):
        assert split_list("inline:{ a=b, c=d }, static:x") == ["inline:{ a=b, c=d }", "static:x"]

    def test_file_entries_of_match_lists_are_read(self, tmp_path):
        domains = tmp_path / "domains"
        domains.write_text("# ours\nexample.com, example.net\nexample.org # too\n")
        cfg = config(f"relay_domains = first.example {domains}\n")
        assert cfg.list("relay_domains") == ["first.example", "example.com", "example.net",
                                             "example.org"]

    def test_unreadable_file_entry_is_an_error(self, tmp_path):
        cfg = config(f"mydestination = {tmp_path}/missing\n")
        with pytest.raises(ConfigError, match="mydestination: open"):
            cfg.list("mydestination")

    def test_paths_in_other_lists_are_not_files(self):
        assert config().list("maillog_file_prefixes") == ["/var", "/dev/stdout"]


class TestComputedDefaults:
    def test_myhostname_is_fully_qualified(self):
        assert "." in config()["myhostname"]

    def test_mynetworks_host_style_lists_single_addresses(self):
        nets = config().list("mynetworks")
        assert "127.0.0.1/32" in nets
        assert all(n.endswith(("/32", "/128")) for n in nets)

    def test_mynetworks_subnet_style(self):
        nets = config("mynetworks_style = subnet\n").list("mynetworks")
        assert "127.0.0.0/8" in nets


class TestDerived:
    """What a program builds from its Config (a rewriter, opened tables) is
    built once per Config and kept with it."""

    def test_it_is_built_once_per_config_and_arguments(self):
        built = []

        def build(cfg, name):
            built.append(name)
            return cfg.get(name)
        cfg = config("myhostname = a.example\nmydomain = example\n")
        assert cfg.derived(build, "myhostname") == "a.example"
        assert cfg.derived(build, "myhostname") == "a.example"
        assert cfg.derived(build, "mydomain") == "example"
        assert built == ["myhostname", "mydomain"]

    def test_a_copy_with_overrides_builds_its_own(self):
        cfg = config("myhostname = a.example\n")
        other = cfg.with_overrides({"myhostname": "b.example"})
        assert cfg.derived(Config.get, "myhostname") == "a.example"
        assert other.derived(Config.get, "myhostname") == "b.example"
