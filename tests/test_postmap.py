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


MIME_MESSAGE = """From: a@example.com
Subject: hello
 folded
Content-Type: multipart/mixed; boundary="XX"

preamble
--XX
Content-Type: text/plain
X-Part: one

body one
--XX
Content-Type: message/rfc822

Subject: inner

inner body
--XX--
"""

PRIMARY = ["From: a@example.com", "Subject: hello\n folded",
           'Content-Type: multipart/mixed; boundary="XX"']
PART_HEADERS = ["Content-Type: text/plain", "X-Part: one", "Content-Type: message/rfc822",
                "Subject: inner"]


def keys(result):
    """keys - the looked-up keys of a -q - run whose table answers every key with "="."""
    assert result.returncode == 0, result.stderr
    return [entry[:-1] for entry in result.stdout.split("=\n")[:-1]]


class TestMessageQueries:
    """-h/-b with and without -m, as Postfix's postmap prints them (checked
    against Postfix 3.7 by hand)."""

    @pytest.fixture
    def table(self, env):
        return "regexp:" + source(env, "/^/ =\n", "everything")

    def run(self, env, table, *options, message=MIME_MESSAGE):
        return keys(postmap(env, *options, "-q", "-", table, input=message))

    def test_h_stops_at_the_end_of_the_primary_headers(self, env, table):
        assert self.run(env, table, "-h") == PRIMARY

    def test_b_starts_with_the_empty_line_and_sees_every_line(self, env, table):
        got = self.run(env, table, "-b")
        assert got[:3] == ["", "preamble", "--XX"]
        assert "X-Part: one" in got and "Subject: inner" in got

    def test_m_h_adds_part_and_attached_message_headers(self, env, table):
        assert self.run(env, table, "-m", "-h") == PRIMARY + PART_HEADERS

    def test_m_b_leaves_out_those_headers(self, env, table):
        assert self.run(env, table, "-m", "-b") == [
            "", "preamble", "--XX", "", "body one", "--XX", "", "", "inner body", "--XX--"]

    def test_m_hb_is_every_line_once_in_order(self, env, table):
        got = self.run(env, table, "-m", "-hb")
        assert got == self.run(env, table, "-hb")
        assert len(got) == MIME_MESSAGE.count("\n") - 1    # one folded header

    def test_a_non_header_line_ends_the_headers_after_an_empty_key(self, env, table):
        message = "Subject: x\nnot a header\n\nbody\n"
        assert self.run(env, table, "-hb", message=message) == [
            "Subject: x", "", "not a header", "", "body"]

    def test_obsolete_space_before_colon_is_normalised(self, env, table):
        assert self.run(env, table, "-h", message="X-A : b\n\n") == ["X-A: b"]

    def test_8bit_bytes_pass_through_unharmed(self, env, table):
        result = subprocess.run([str(BIN / "postmap"), "-c", str(env / "config"), "-m", "-hb",
                                 "-q", "-", table], input=b"Subject: caf\xe9\n\n\xff\x0c x\n",
                                capture_output=True, timeout=30)
        assert (result.returncode, result.stdout) == (
            0, b"Subject: caf\xe9\t=\n\t=\n\xff\x0c x\t=\n")

    def test_checks_tables_answer_per_mime_part(self, env):
        checks = "regexp:" + source(env, "/^Content-Type: message/ REJECT no forwards\n"
                                         "/^inner body/ DISCARD\n", "checks")
        result = postmap(env, "-m", "-hb", "-q", "-", checks, input=MIME_MESSAGE)
        assert result.stdout == ("Content-Type: message/rfc822\tREJECT no forwards\n"
                                 "inner body\tDISCARD\n")


class TestFileValues:
    """-F: values are file names whose contents are stored base64-encoded
    (tls_server_sni_maps); queries and listings decode them."""

    @pytest.fixture
    def pems(self, env):
        (env / "a.pem").write_text("AAA\n")
        (env / "b.pem").write_text("BBB")
        return env

    def test_build_stores_base64_of_the_joined_files(self, env, pems):
        path = source(env, f"a.example {env}/a.pem\nb.example {env}/a.pem, {env}/b.pem "
                           f"{env}/a.pem\n", "sni")
        assert postmap(env, "-F", f"hash:{path}").returncode == 0
        assert postmap(env, "-q", "a.example", f"hash:{path}").stdout == "QUFBCg==\n"
        assert postmap(env, "-F", "-q", "b.example", f"hash:{path}").stdout == \
            "AAA\n\nBBB\nAAA\n\n"
        assert postmap(env, "-F", "-q", "-", f"hash:{path}", input="a.example\n").stdout == \
            "a.example\tAAA\n\n"
        listing = postmap(env, "-F", "-s", f"hash:{path}").stdout
        assert len(listing) == len("a.example\tAAA\n\n" "b.example\tAAA\n\nBBB\nAAA\n\n")
        assert "a.example\tAAA\n\n" in listing and "b.example\tAAA\n\nBBB\nAAA\n\n" in listing

    def test_a_missing_file_skips_the_entry_with_a_warning(self, env, pems):
        path = source(env, f"a.example {env}/nowhere.pem\nb.example {env}/b.pem\n", "sni")
        result = postmap(env, "-F", f"cdb:{path}")
        assert result.returncode == 0
        assert result.stderr == (f"postmap: warning: {path}, line 1: open {env}/nowhere.pem: "
                                 "No such file or directory: skipping this entry\n")
        assert postmap(env, "-q", "a.example", f"cdb:{path}").returncode == 1
        assert postmap(env, "-F", "-q", "b.example", f"cdb:{path}").stdout == "BBB\n"

    def test_i_reads_file_names_too(self, env, pems):
        path = str(env / "sni")
        assert postmap(env, "-F", "-i", f"hash:{path}", input=f"a.example {env}/a.pem\n"
                       ).returncode == 0
        assert postmap(env, "-q", "a.example", f"hash:{path}").stdout == "QUFBCg==\n"

    def test_a_value_that_is_not_base64_is_a_query_error(self, env):
        path = source(env, "x notbase64!!\n")
        postmap(env, f"hash:{path}")
        result = postmap(env, "-F", "-q", "x", f"hash:{path}")
        assert (result.returncode, result.stdout) == (1, "")
        assert result.stderr == (
            f"postmap: warning: table hash:{path}.db: key x: malformed BASE64 value: "
            f"notbase64!!\npostmap: fatal: table hash:{path}.db: query error\n")
        listing = postmap(env, "-F", "-s", f"hash:{path}")
        assert (listing.returncode, listing.stdout) == (0, "")
        assert "malformed BASE64 value" in listing.stderr


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
