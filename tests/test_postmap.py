"""postmap(1): building, querying, listing and updating tables (pymaster.commands.postmap)."""

import os
import subprocess
from pathlib import Path

import pytest

BIN = Path(__file__).resolve().parents[1] / ".venv" / "bin"


@pytest.fixture
def env(tmp_path):
    config = tmp_path / "config"
    config.mkdir()
    (config / "main.cf").write_text("default_database_type = hash\n")
    return tmp_path


def postmap(env, *args, input=None, program="postmap"):
    return subprocess.run([str(BIN / program), "-c", str(env / "config"), *args],
                          input=input, capture_output=True, text=True, timeout=30)


def source(env, text, name="virtual"):
    path = env / name
    path.write_text(text)
    return str(path)


class TestBuild:
    def test_build_then_query(self, env):
        path = source(env, "User@Example.com  mailbox1\n# comment\n\nother value\n"
                           "  continued\n")
        result = postmap(env, f"hash:{path}")
        assert result.returncode == 0 and result.stderr == ""
        assert os.path.exists(path + ".db")
        query = postmap(env, "-q", "USER@example.COM", f"hash:{path}")
        assert (query.returncode, query.stdout) == (0, "mailbox1\n")
        assert postmap(env, "-q", "other", path).stdout == "value  continued\n"

    def test_default_type_is_default_database_type(self, env):
        path = source(env, "k v\n")
        assert postmap(env, path).returncode == 0
        assert os.path.exists(path + ".db")
        (env / "config" / "main.cf").write_text("default_database_type = cdb\n")
        assert postmap(env, path).returncode == 0
        assert os.path.exists(path + ".cdb")
        assert postmap(env, "-q", "k", f"cdb:{path}").stdout == "v\n"

    def test_btree(self, env):
        path = source(env, "k v\n")
        assert postmap(env, f"btree:{path}").returncode == 0
        assert postmap(env, "-q", "k", f"btree:{path}").stdout == "v\n"

    def test_duplicates_and_malformed_lines_are_warned_with_line_numbers(self, env):
        path = source(env, "a 1\nlonely\na 2\n")
        result = postmap(env, path)
        assert result.returncode == 0
        assert f"postmap: warning: {path}, line 2: expected format: key whitespace value" \
               " -- ignoring this line" in result.stderr
        assert f'postmap: warning: {path}, line 3: duplicate entry: "a"' in result.stderr
        assert postmap(env, "-q", "a", path).stdout == "1\n"

    def test_r_replaces_and_w_ignores_duplicates_silently(self, env):
        path = source(env, "a 1\na 2\n")
        result = postmap(env, "-r", path)
        assert result.stderr == "" and postmap(env, "-q", "a", path).stdout == "2\n"
        result = postmap(env, "-w", path)
        assert result.stderr == "" and postmap(env, "-q", "a", path).stdout == "1\n"

    def test_f_keeps_case(self, env):
        path = source(env, "MixedCase v\n")
        postmap(env, "-f", path)
        assert postmap(env, "-s", path).stdout == "MixedCase\tv\n"
        assert postmap(env, "-f", "-q", "MixedCase", path).stdout == "v\n"
        assert postmap(env, "-f", "-q", "mixedcase", path).returncode == 1

    def test_N_and_n_nul_termination(self, env):
        path = source(env, "k v\n")
        assert postmap(env, "-N", path).returncode == 0
        assert postmap(env, "-q", "k", path).stdout == "v\n"
        assert postmap(env, "-n", path).returncode == 0
        assert postmap(env, "-q", "k", path).stdout == "v\n"

    def test_mode_follows_the_source_unless_p(self, env):
        path = source(env, "k v\n")
        os.chmod(path, 0o640)
        postmap(env, path)
        assert os.stat(path + ".db").st_mode & 0o777 == 0o640
        os.unlink(path + ".db")
        postmap(env, "-p", path)
        assert os.stat(path + ".db").st_mode & 0o777 == 0o644 & ~_umask()

    def test_errors(self, env):
        result = postmap(env, f"{env}/missing")
        assert (result.returncode, result.stderr) == (
            1, f"postmap: fatal: open {env}/missing: No such file or directory\n")
        result = postmap(env, f"texthash:{source(env, 'k v')}")
        assert result.returncode == 1
        assert "unsupported dictionary type: texthash does not support bulk-mode creation" \
            in result.stderr
        assert "unsupported dictionary type: nosuch" in postmap(env, "nosuch:/x").stderr


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


class TestQuery:
    def test_exit_status(self, env):
        path = source(env, "k v\n")
        postmap(env, path)
        assert postmap(env, "-q", "k", path).returncode == 0
        result = postmap(env, "-q", "nope", path)
        assert (result.returncode, result.stdout) == (1, "")

    def test_first_table_with_the_key_wins(self, env):
        first = source(env, "a from-first\n", "first")
        second = source(env, "a from-second\nb from-second\n", "second")
        postmap(env, first, second)
        assert postmap(env, "-q", "a", first, second).stdout == "from-first\n"
        assert postmap(env, "-q", "b", first, second).stdout == "from-second\n"

    def test_keys_from_standard_input(self, env):
        path = source(env, "a 1\nb 2\n")
        postmap(env, path)
        result = postmap(env, "-q", "-", path, input="a\nmissing\nB\n")
        assert (result.returncode, result.stdout) == (0, "a\t1\nB\t2\n")
        assert postmap(env, "-q", "-", path, input="x\n").returncode == 1

    def test_lookup_errors_are_fatal(self, env):
        result = postmap(env, "-q", "k", "fail:x")
        assert result.returncode == 1
        assert result.stderr == "postmap: fatal: table fail:x: query error: Application error\n"
        result = postmap(env, "-q", "k", f"hash:{env}/none")
        assert result.stderr == f"postmap: fatal: open database {env}/none.db: " \
                                "No such file or directory\n"

    def test_any_type_can_be_queried(self, env):
        path = source(env, "/^(.*)@example\\.com$/ $1\n", "re")
        assert postmap(env, "-q", "joe@example.com", f"pcre:{path}").stdout == "joe\n"
        assert postmap(env, "-q", "x", "inline:{x=y}").stdout == "y\n"

    def test_header_and_body_checks(self, env):
        checks = source(env, "/^Subject: (.*)/ REJECT subject $1\n/spam/ DISCARD\n", "checks")
        message = "Subject: hello\n world\nFrom: a@b\n\nthis is spam\nclean\n"
        result = postmap(env, "-h", "-q", "-", f"regexp:{checks}", input=message)
        assert result.stdout == "Subject: hello\n world\tREJECT subject hello\n world\n"
        result = postmap(env, "-b", "-q", "-", f"regexp:{checks}", input=message)
        assert result.stdout == "this is spam\tDISCARD\n"
        result = postmap(env, "-bh", "-q", "-", f"regexp:{checks}", input=message)
        assert result.stdout.count("\t") == 2


class TestDumpAndUpdate:
    def test_s_lists_every_entry(self, env):
        path = source(env, "b 2\na 1\n")
        postmap(env, path)
        assert sorted(postmap(env, "-s", path).stdout.splitlines()) == ["a\t1", "b\t2"]
        assert postmap(env, "-s", "inline:{x=y}").stdout == "x\ty\n"
        result = postmap(env, "-s", f"regexp:{source(env, '/a/ b', 're')}")
        assert result.returncode == 1 and "not supported" in result.stderr

    def test_d_deletes(self, env):
        path = source(env, "a 1\nb 2\nc 3\n")
        postmap(env, path)
        assert postmap(env, "-d", "A", path).returncode == 0
        assert postmap(env, "-d", "a", path).returncode == 1
        assert postmap(env, "-d", "-", path, input="b\n").returncode == 0
        assert postmap(env, "-s", path).stdout == "c\t3\n"

    def test_i_adds_from_standard_input(self, env):
        path = source(env, "a 1\n")
        postmap(env, path)
        result = postmap(env, "-i", path, input="b 2\na changed\n")
        assert 'duplicate entry: "a"' in result.stderr
        assert postmap(env, "-q", "a", path).stdout == "1\n"
        assert postmap(env, "-q", "b", path).stdout == "2\n"
        postmap(env, "-r", "-i", path, input="a changed\n")
        assert postmap(env, "-q", "a", path).stdout == "changed\n"

    def test_i_creates_a_missing_table(self, env):
        path = str(env / "fresh")
        assert postmap(env, "-i", f"cdb:{path}", input="k v\n").returncode == 0
        assert postmap(env, "-q", "k", f"cdb:{path}").stdout == "v\n"


class TestUsage:
    def test_bad_option_and_missing_arguments(self, env):
        for args in (["-z", "x"], [], ["-q"]):
            result = postmap(env, *args)
            assert result.returncode == 1
            assert "postmap: fatal: usage: postmap" in result.stderr

    def test_missing_main_cf(self, env):
        result = subprocess.run([str(BIN / "postmap"), "-c", str(env / "nowhere"), "-q", "a",
                                 "inline:{a=b}"], capture_output=True, text=True)
        assert result.returncode == 1
        assert "postmap: fatal: open" in result.stderr
