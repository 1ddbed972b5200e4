"""pymaster.mail.sasl.passwd and the saslpasswd2 command: the built-in password store."""

from __future__ import annotations

import os
import stat

import pytest

from pymaster.commands import saslpasswd2
from pymaster.mail.sasl.passwd import PasswordFile, PasswordFileError, check_password, hash_password


class TestHashes:
    def test_salted_scrypt_never_the_password(self):
        a, b = hash_password("secret"), hash_password("secret")
        assert a != b and "secret" not in a and a.startswith("scrypt$")
        assert check_password(a, "secret") and not check_password(a, "Secret")

    def test_unknown_scheme_never_matches(self):
        assert not check_password("plain$secret", "secret")
        assert not check_password("", "")


class TestPasswordFile:
    def test_set_save_load_verify(self, tmp_path):
        path = str(tmp_path / "sasldb2")
        store = PasswordFile(path)
        store.set("kdent", "", "secret")
        store.set("kdent", "example.com", "other")
        store.save()
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        again = PasswordFile(path).load()
        assert again.verify("kdent", "", "secret")
        assert again.verify("kdent", "example.com", "other")
        assert not again.verify("kdent", "example.com", "secret")
        assert not again.verify("nobody", "", "secret")
        assert again.users() == [("kdent", ""), ("kdent", "example.com")]

    def test_bad_line_names_file_and_line(self, tmp_path):
        path = tmp_path / "sasldb2"
        path.write_text("# users\nnocolon\n")
        with pytest.raises(PasswordFileError, match=r"sasldb2, line 2: expected user:hash"):
            PasswordFile(str(path)).load()

    def test_reload_when_replaced(self, tmp_path):
        path = str(tmp_path / "sasldb2")
        reader = PasswordFile(path).load()
        writer = PasswordFile(path)
        writer.set("new", "", "pw")
        writer.save()
        reader.reload_if_changed()
        assert reader.verify("new", "", "pw")


class TestSaslpasswd2:
    def run(self, monkeypatch, tmp_path, args, stdin=""):
        import io
        (tmp_path / "main.cf").write_text("")
        monkeypatch.setenv("MAIL_CONFIG", str(tmp_path))
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        with pytest.raises(SystemExit) as e:
            saslpasswd2.main(args)
        return e.value.code

    def test_create_with_password_from_stdin_in_the_default_store(self, monkeypatch, tmp_path,
                                                                  capsys):
        assert self.run(monkeypatch, tmp_path, ["-c", "-p", "kdent"], "secret\n") == 0
        assert PasswordFile(str(tmp_path / "sasldb2")).load().verify("kdent", "", "secret")

    def test_realm_file_and_delete(self, monkeypatch, tmp_path, capsys):
        db = str(tmp_path / "other.db")
        assert self.run(monkeypatch, tmp_path, ["-c", "-p", "-f", db, "-u", "example.com",
                                                "-a", "smtpd", "kdent"], "pw\n") == 0
        assert PasswordFile(db).load().verify("kdent", "example.com", "pw")
        assert self.run(monkeypatch, tmp_path, ["-d", "-f", db, "-u", "example.com",
                                                "kdent"]) == 0
        assert PasswordFile(db).load().users() == []

    def test_errors(self, monkeypatch, tmp_path, capsys):
        assert self.run(monkeypatch, tmp_path, ["-p", "ghost"], "pw\n") == 1
        assert "user ghost not found" in capsys.readouterr().err
        assert self.run(monkeypatch, tmp_path, ["-d", "ghost"]) == 1
        assert self.run(monkeypatch, tmp_path, ["-x", "kdent"]) == 1
        assert "invalid option -- 'x'" in capsys.readouterr().err
        assert self.run(monkeypatch, tmp_path, ["-c", "-d", "kdent"]) == 1
        assert self.run(monkeypatch, tmp_path, []) == 1
