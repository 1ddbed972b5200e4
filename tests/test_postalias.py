"""aliases(5) parsing (pymaster.mail.aliases), postalias(1) and newaliases(1)."""

import subprocess

import pytest

from pymaster.mail.aliases import classify, normalise_value, parse_aliases, read_include, \
    split_values
from tests.test_postmap import BIN, postmap


def parse(text):
    warnings = []
    entries = list(parse_aliases(text.splitlines(True), "/etc/aliases", warnings.append))
    return entries, warnings


class TestFormat:
    def test_entries_continuations_and_comments(self):
        entries, warnings = parse('# c\nroot: admin,\n  "|/bin/cmd a, b"\n\n'
                                  '"my name": x\npostmaster:root\nbad line\n')
        assert entries == [(2, "root", 'admin, "|/bin/cmd a, b"'), (5, "my name", "x"),
                           (6, "postmaster", "root")]
        assert warnings == ["/etc/aliases, line 7: need name:value pair"]

    def test_values(self):
        assert normalise_value('a ,b,,  "c, d"') == 'a, b, "c, d"'
        assert split_values('a, "|cmd x, y", /var/log/f, :include:/etc/l') == \
            ["a", "|cmd x, y", "/var/log/f", ":include:/etc/l"]

    @pytest.mark.parametrize("item, kind", [
        ("|/usr/bin/procmail -a x", ("command", "/usr/bin/procmail -a x")),
        ("/var/spool/archive", ("file", "/var/spool/archive")),
        (":include:/etc/mail/list", ("include", "/etc/mail/list")),
        (":INCLUDE:/etc/mail/list", ("include", "/etc/mail/list")),
        ("user@example.com", ("address", "user@example.com")),
    ])
    def test_classify(self, item, kind):
        assert classify(item) == kind

    def test_include_file(self, tmp_path):
        path = tmp_path / "list"
        path.write_text("# members\na, b\nc\n")
        assert read_include(str(path)) == ["a", "b", "c"]


@pytest.fixture
def env(tmp_path):
    aliases = tmp_path / "aliases"
    aliases.write_text("Root: admin, \"|/bin/cmd a, b\"\nfoo: /file/x,\n  :include:/etc/inc\n"
                       "bad line\nroot: dup\n")
    config = tmp_path / "config"
    config.mkdir()
    (config / "main.cf").write_text(f"alias_database = hash:{aliases}\n"
                                    f"alias_maps = hash:{aliases}\n")
    return tmp_path


def postalias(env, *args, input=None):
    return postmap(env, *args, input=input, program="postalias")


class TestPostalias:
    def test_build_query_and_list(self, env):
        path = str(env / "aliases")
        result = postalias(env, path)
        assert result.returncode == 0
        assert f"postalias: warning: {path}, line 4: need name:value pair" in result.stderr
        assert f'postalias: warning: {path}, line 5: duplicate entry: "root"' in result.stderr
        assert postalias(env, "-q", "ROOT", path).stdout == 'admin, "|/bin/cmd a, b"\n'
        assert postalias(env, "-q", "nobody", path).returncode == 1
        assert postalias(env, "-s", path).stdout.splitlines() == [
            'root:\tadmin, "|/bin/cmd a, b"', "foo:\t/file/x, :include:/etc/inc", "@:\t@"]

    def test_query_from_standard_input(self, env):
        path = str(env / "aliases")
        postalias(env, path)
        result = postalias(env, "-q", "-", path, input="foo\nnone\n")
        assert result.stdout == "foo:\t/file/x, :include:/etc/inc\n"

    def test_update_and_delete(self, env):
        path = str(env / "aliases")
        postalias(env, path)
        assert postalias(env, "-i", path, input="new: a, b\n").returncode == 0
        assert postalias(env, "-q", "new", path).stdout == "a, b\n"
        assert postalias(env, "-d", "foo", path).returncode == 0
        assert postalias(env, "-q", "foo", path).returncode == 1

    def test_newaliases_rebuilds_alias_database(self, env):
        result = subprocess.run([str(BIN / "newaliases"), "-C", str(env / "config")],
                                capture_output=True, text=True)
        assert result.returncode == 0
        assert "newaliases: warning:" in result.stderr
        assert postalias(env, "-q", "root", str(env / "aliases")).returncode == 0

    def test_newaliases_uses_mail_config(self, env):
        result = subprocess.run([str(BIN / "newaliases")], capture_output=True, text=True,
                                env={"MAIL_CONFIG": str(env / "config"), "PATH": "/usr/bin:/bin"})
        assert result.returncode == 0
        assert (env / "aliases.db").exists()
