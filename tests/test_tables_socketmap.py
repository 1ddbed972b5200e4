"""socketmap: tables (pymaster.util.tables.socketmap): the netstring protocol."""

import socket
import threading

import pytest

from pymaster.util.tables import TableError, create_table
from pymaster.util.tables.socketmap import netstring, read_netstring

ANSWERS = {"known": b"OK the value", "broken": b"TEMP database down"}


def serve(listener: socket.socket) -> None:
    """A socketmap server for the map "users" that answers until closed."""
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn, conn.makefile("rb") as f:
            while True:
                try:
                    request = read_netstring(f).decode()
                except OSError:
                    break
                name, _, key = request.partition(" ")
                reply = ANSWERS.get(key, b"NOTFOUND ") if name == "users" else b"PERM no map"
                conn.sendall(netstring(reply))
                if key == "hangup":
                    break


@pytest.fixture(params=["inet", "unix"])
def spec(request, tmp_path):
    if request.param == "inet":
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        where = f"inet:127.0.0.1:{listener.getsockname()[1]}"
    else:
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(tmp_path / "sock"))
        where = f"unix:{tmp_path / 'sock'}"
    listener.listen()
    threading.Thread(target=serve, args=(listener,), daemon=True).start()
    yield f"socketmap:{where}:users"
    listener.close()


def test_found_and_not_found(spec):
    table = create_table(spec)
    assert table.lookup("known") == "the value"
    assert table.lookup("unknown") is None
    assert table.lookup("known") == "the value"


def test_temp_and_perm_are_failures(spec):
    with pytest.raises(TableError, match="TEMP database down"):
        create_table(spec).lookup("broken")
    with pytest.raises(TableError, match="PERM"):
        create_table(spec.rsplit(":", 1)[0] + ":other").lookup("known")


def test_reconnects_after_the_server_closed(spec):
    table = create_table(spec)
    assert table.lookup("hangup") is None
    assert table.lookup("known") == "the value"


def test_no_server_is_a_temporary_failure(tmp_path):
    with pytest.raises(TableError):
        create_table(f"socketmap:unix:{tmp_path}/none:users").lookup("x")


def test_bad_spec():
    with pytest.raises(TableError):
        create_table("socketmap:tcp:host:users")
