"""pymaster/util/fdpass.py: headers and descriptors over a unix stream socket."""

from __future__ import annotations

import os
import socket

import pytest

from pymaster.util import fdpass


@pytest.fixture
def pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    a.settimeout(5)
    b.settimeout(5)
    yield a, b
    a.close()
    b.close()


def test_a_header_alone(pair):
    a, b = pair
    fdpass.send(a, {"op": "find_dest", "label": "smtp:example.org"})
    assert fdpass.recv(b) == ({"op": "find_dest", "label": "smtp:example.org"}, [])


def test_a_descriptor_travels_and_works(pair):
    a, b = pair
    r, w = os.pipe()
    try:
        fdpass.send(a, {"op": "save_endp"}, [w])
        os.close(w)                     # the receiver's copy keeps the pipe open
        header, fds = fdpass.recv(b)
        assert header == {"op": "save_endp"} and len(fds) == 1
        assert os.get_inheritable(fds[0]) is False
        os.write(fds[0], b"through")
        os.close(fds[0])
        assert os.read(r, 100) == b"through"
    finally:
        os.close(r)


def test_messages_back_to_back_keep_their_own_descriptors(pair):
    a, b = pair
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    fdpass.send(a, {"n": 1}, [w1])
    fdpass.send(a, {"n": 2})
    fdpass.send(a, {"n": 3}, [w2])
    got = [fdpass.recv(b) for _ in range(3)]
    assert [h["n"] for h, _ in got] == [1, 2, 3]
    assert [len(f) for _, f in got] == [1, 0, 1]
    for (_, fds), r in ((got[0], r1), (got[2], r2)):
        os.write(fds[0], b"x")
        assert os.read(r, 1) == b"x"
    fdpass.close_fds([r1, w1, r2, w2] + got[0][1] + got[2][1])


def test_end_of_file_and_broken_messages(pair):
    a, b = pair
    a.sendall(b"\x00\x00\x00\x05[1]")      # shorter than it says, then the end
    a.shutdown(socket.SHUT_WR)
    with pytest.raises(fdpass.FdPassError):
        fdpass.recv(b)


def test_a_closed_peer_is_eof(pair):
    a, b = pair
    a.close()
    with pytest.raises(EOFError):
        fdpass.recv(b)


def test_a_header_must_be_an_object(pair):
    a, b = pair
    body = b"[1, 2]"
    a.sendall(len(body).to_bytes(4, "big") + body)
    with pytest.raises(fdpass.FdPassError, match="not an object"):
        fdpass.recv(b)


def test_too_many_descriptors_are_closed_and_refused(pair):
    a, b = pair
    pipes = [os.pipe() for _ in range(3)]
    fdpass.send(a, {"op": "x"}, [w for _, w in pipes])
    with pytest.raises(fdpass.FdPassError, match="more than 1"):
        fdpass.recv(b, max_fds=1)
    for r, w in pipes:
        os.close(w)
        # Every copy the receiver got is closed: the pipe reads end of file.
        assert os.read(r, 1) == b""
        os.close(r)
