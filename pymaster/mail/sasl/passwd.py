"""The built-in SASL password store: a text file of salted, slow hashes.

Cyrus keeps its users in /etc/sasldb2 (a Berkeley DB of plain-text
passwords). pymaster's store takes the same place in the configuration
(`smtpd_sasl_db`, default $config_directory/sasldb2) and the same keys
(user and realm), but never keeps a password: each line is

    user@realm:scrypt$16384$8$1$SALT$HASH

(an empty realm is written `user:`; SALT and HASH are base64). Lines are
written with a temporary file and a rename, so a reader never sees half a
file. Verification is deliberately slow (scrypt); callers in an event loop
run it in a thread.

Interface:
    hash_password(password) -> str            a new salted hash
    check_password(stored, password) -> bool   constant time
    PasswordFile(path)  .load() .save() .set(user, realm, password) .delete(user, realm)
        .verify(user, realm, password) -> bool   .users() -> list[(user, realm)]
        .reload_if_changed()
    user_key(user, realm) -> "user@realm" or "user"
    PasswordFileError
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

SCRYPT_N, SCRYPT_R, SCRYPT_P = 16384, 8, 1
SALT_BYTES = 16


class PasswordFileError(Exception):
    """The store cannot be read or written; the text names the file and line."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str) -> str:
    """hash_password - `scrypt$N$r$p$SALT$HASH` for PASSWORD with a fresh salt."""
    salt = os.urandom(SALT_BYTES)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R,
                            p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def check_password(stored: str, password: str) -> bool:
    """check_password - does PASSWORD match STORED (scrypt or pbkdf2-sha256)?"""
    parts = stored.split("$")
    try:
        if parts[0] == "scrypt" and len(parts) == 6:
            n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
            salt, want = base64.b64decode(parts[4]), base64.b64decode(parts[5])
            got = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p,
                                 dklen=len(want), maxmem=128 * r * (n + 2) * p + 1024 * 1024)
        elif parts[0] == "pbkdf2-sha256" and len(parts) == 4:
            rounds = int(parts[1])
            salt, want = base64.b64decode(parts[2]), base64.b64decode(parts[3])
            got = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, rounds,
                                      len(want))
        else:
            return False
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


def user_key(user: str, realm: str) -> str:
    return f"{user}@{realm}" if realm else user


class PasswordFile:
    """The store in memory, read from and written back to PATH."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.entries: dict[str, str] = {}
        self._stamp: tuple | None = None

    def load(self) -> "PasswordFile":
        """load - read PATH; a missing file is an empty store."""
        self.entries = {}
        try:
            with open(self.path, encoding="utf-8") as f:
                st = os.fstat(f.fileno())
                for number, line in enumerate(f, 1):
                    self._parse(line, number)
        except FileNotFoundError:
            self._stamp = None
            return self
        except OSError as e:
            raise PasswordFileError(f"cannot open {self.path}: {e.strerror}") from None
        self._stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        return self

    def _parse(self, line: str, number: int) -> None:
        line = line.strip()
        if not line or line.startswith("#"):
            return
        key, sep, stored = line.rpartition(":")
        if not sep or not key:
            raise PasswordFileError(f"{self.path}, line {number}: expected user:hash")
        self.entries[key] = stored

    def reload_if_changed(self) -> None:
        """reload_if_changed - read the file again when saslpasswd2 replaced it."""
        try:
            st = os.stat(self.path)
        except OSError:
            return      # inside a chroot, or removed: keep what we have
        if (st.st_ino, st.st_mtime_ns, st.st_size) != self._stamp:
            try:
                self.load()
            except PasswordFileError:
                pass    # keep the old contents rather than lock everybody out

    def save(self) -> None:
        """save - write the store atomically: mode 0600 for a new file (it holds password
        hashes); a file that exists keeps its mode and group (0640 root:postfix lets an
        smtpd that dropped privileges notice new users)."""
        # Only saslpasswd2 writes the store: smtpd, which reads it, need not
        # import tempfile (with shutil, lzma and bz2: about 0.5 MB).
        import tempfile
        directory = os.path.dirname(os.path.abspath(self.path))
        fd, tmp = tempfile.mkstemp(prefix=".sasldb.", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                for key in sorted(self.entries):
                    f.write(f"{key}:{self.entries[key]}\n")
                f.flush()
                os.fsync(f.fileno())
            _copy_access(self.path, tmp)
            os.replace(tmp, self.path)
        except OSError as e:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise PasswordFileError(f"cannot write {self.path}: {e.strerror}") from None

    def set(self, user: str, realm: str, password: str) -> None:
        self.entries[user_key(user, realm)] = hash_password(password)

    def delete(self, user: str, realm: str) -> bool:
        return self.entries.pop(user_key(user, realm), None) is not None

    def exists(self, user: str, realm: str) -> bool:
        return user_key(user, realm) in self.entries

    def verify(self, user: str, realm: str, password: str) -> bool:
        stored = self.entries.get(user_key(user, realm))
        if stored is None:
            # Spend the same time for an unknown user, so timing tells nothing.
            check_password(_DUMMY, password)
            return False
        return check_password(stored, password)

    def users(self) -> list[tuple[str, str]]:
        out = []
        for key in sorted(self.entries):
            user, _, realm = key.rpartition("@") if "@" in key else (key, "", "")
            out.append((user, realm))
        return out


def _copy_access(old: str, new: str) -> None:
    try:
        st = os.stat(old)
    except FileNotFoundError:
        os.chmod(new, 0o600)
        return
    os.chmod(new, st.st_mode & 0o777)
    if os.geteuid() == 0:
        os.chown(new, st.st_uid, st.st_gid)


_DUMMY = "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
