"""The queue file format: typed records, the writer's encoder and the reader.

A queue file is a sequence of records. Every record is one type byte, a
4-byte big-endian length, then that many bytes of data:

    +------+----------------+-------------------+
    | type | length (4, BE) | data (length)     |
    +------+----------------+-------------------+

Record types, in the order a file holds them:

    C  size        fixed width (47 bytes), always first, patched at commit:
                   "%15d %15d %15d" content length, content offset, recipients
    T  time        arrival time, "seconds.microseconds"
    A  attribute   "name=value", open-ended: client_address, envid, ret, uid,
                   log_queue_id, ... Services add their own names freely.
    S  sender      the envelope sender; empty data is the null sender <>
    O  orig rcpt   the original recipient of the R record that follows
    N  notify      DSN NOTIFY of the R record that follows ("SUCCESS,FAILURE")
    Q  orcpt       DSN ORCPT of the R record that follows ("rfc822;a@b")
    R  recipient   a recipient still to be delivered
    D  done        a recipient delivered or bounced: an R record whose type
                   byte was rewritten in place (see mark_done)
    M  content     the message (headers, blank line, body; LF line ends) as
                   raw bytes; its length field is patched at commit. The
                   content is stored once, so a reader seeks to it directly.
    E  end         empty; the last record. A file without it is truncated.

Records after M and before E (any of A, O, N, Q, R, D) are the extracted
section: recipients or attributes added after the content was written.

A recipient's offset is the file offset of its R record's type byte, which
is what qmgr hands to delivery agents and what mark_done rewrites. A queue
file is complete (visible to qmgr and pickup) when its owner-execute bit is
set; see pymaster.mail.queue, which owns directories, names and moves.

Interface:
    Recipient(address, orig="", notify="", orcpt="", offset=-1, done=False)
    Message: queue_id, path, arrival_time, sender, attrs, recipients,
             content_offset, content_length, size, read_content(), iter_content()
    read_message(path) -> Message          raises CorruptQueueFile
    parse_message(data, name) -> Message   the same, from bytes (postdrop)
    iter_records(path) -> (offset, type, data)   for postcat; content not loaded
    walk_records(path) -> (offset, type, data, length)
    walk_buffer(path, data, base=0) -> the same, over bytes already read
    read_small(path, start=0) -> (bytes | None, size)   a small file in one read
    mark_done(path, offset, fd=-1, sync=True)
    append_attribute(path, name, value)    an A record before E, crash-safe
    encode(type, data) -> bytes; size_record(...) -> bytes
    encode_message(arrival_time, sender, recipients, attrs, content) -> bytes
    CorruptQueueFile
"""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator

REC_SIZE = b"C"
REC_TIME = b"T"
REC_ATTR = b"A"
REC_SENDER = b"S"
REC_ORIG = b"O"
REC_NOTIFY = b"N"
REC_ORCPT = b"Q"
REC_RCPT = b"R"
REC_DONE = b"D"
REC_CONTENT = b"M"
REC_END = b"E"

KNOWN_TYPES = frozenset((REC_SIZE, REC_TIME, REC_ATTR, REC_SENDER, REC_ORIG, REC_NOTIFY,
                         REC_ORCPT, REC_RCPT, REC_DONE, REC_CONTENT, REC_END))
HEADER = struct.Struct(">cI")
HEADER_SIZE = HEADER.size
SIZE_FORMAT = "%15d %15d %15d"
SIZE_DATA_LEN = 47
MAX_RECORD = 0xFFFFFFFF
# An envelope record larger than this is corruption, not a long address.
MAX_ENVELOPE_RECORD = 1 << 20
# Readers take a file (or what is left of it) up to this size in one read:
# one system call and no buffered reader, where a typical message is 1-10 KB.
WHOLE_READ = 1 << 16


class CorruptQueueFile(Exception):
    """A queue file that is truncated, malformed, or not a queue file."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass
class Recipient:
    address: str
    orig: str = ""
    notify: str = ""
    orcpt: str = ""
    offset: int = -1
    done: bool = False


@dataclass
class Message:
    """The envelope of one queue file, and access to its content."""
    queue_id: str
    path: str
    arrival_time: float = 0.0
    sender: str = ""
    attrs: dict[str, str] = field(default_factory=dict)
    recipients: list[Recipient] = field(default_factory=list)
    content_offset: int = -1
    content_length: int = 0
    rcpt_count: int = 0
    _data: bytes | None = None

    @property
    def size(self) -> int:
        """size - the message size as mailq and postcat report it."""
        return self.content_length

    def pending(self) -> list[Recipient]:
        """pending - the recipients not yet delivered or bounced."""
        return [r for r in self.recipients if not r.done]

    def read_content(self) -> bytes:
        """read_content - headers and body in one read."""
        if self._data is not None:
            return self._data[self.content_offset:self.content_offset + self.content_length]
        with open(self.path, "rb") as f:
            f.seek(self.content_offset)
            data = f.read(self.content_length)
        if len(data) != self.content_length:
            raise CorruptQueueFile(self.path, "content shorter than its record")
        return data

    def iter_content(self, chunk: int = 65536) -> Iterator[bytes]:
        """iter_content - the content in chunks of at most CHUNK bytes."""
        if self._data is not None:
            yield self.read_content()
            return
        with open(self.path, "rb") as f:
            f.seek(self.content_offset)
            left = self.content_length
            while left > 0:
                data = f.read(min(chunk, left))
                if not data:
                    raise CorruptQueueFile(self.path, "content shorter than its record")
                left -= len(data)
                yield data


# -- encoding -----------------------------------------------------------------

def encode(rtype: bytes, data: bytes | str) -> bytes:
    """encode - one record: type byte, length, data."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    return HEADER.pack(rtype, len(data)) + data


def size_record(content_length: int, content_offset: int, rcpt_count: int) -> bytes:
    """size_record - the fixed-width C record (same length for any values)."""
    return encode(REC_SIZE, SIZE_FORMAT % (content_length, content_offset, rcpt_count))


def envelope_records(arrival_time: float, sender: str, recipients: list[Recipient],
                     attrs: dict[str, str]) -> bytes:
    """envelope_records - T, A…, S, then O/N/Q/R per recipient (after the C record)."""
    out = [encode(REC_TIME, "%.6f" % arrival_time)]
    pack = HEADER.pack
    # encode() inlined: a request from smtpd carries some fifteen attributes.
    for name, value in attrs.items():
        if "=" in name or not name:
            raise ValueError(f"bad attribute name: {name!r}")
        data = f"{name}={value}".encode("utf-8", "surrogateescape")
        out += (pack(REC_ATTR, len(data)), data)
    out.append(encode(REC_SENDER, sender))
    for r in recipients:
        out.append(recipient_records(r))
    return b"".join(out)


def recipient_records(r: Recipient) -> bytes:
    """recipient_records - the O/N/Q records of R (when set), then R itself."""
    parts = []
    if r.orig:
        parts.append(encode(REC_ORIG, r.orig))
    if r.notify:
        parts.append(encode(REC_NOTIFY, r.notify))
    if r.orcpt:
        parts.append(encode(REC_ORCPT, r.orcpt))
    parts.append(encode(REC_DONE if r.done else REC_RCPT, r.address))
    return b"".join(parts)


def encode_message(arrival_time: float, sender: str, recipients: list[Recipient],
                   attrs: dict[str, str], content: bytes) -> bytes:
    """encode_message - a whole queue file as bytes (what sendmail gives postdrop)."""
    envelope = envelope_records(arrival_time, sender, recipients, attrs)
    content_offset = len(size_record(0, 0, 0)) + len(envelope) + HEADER_SIZE
    return b"".join((size_record(len(content), content_offset, len(recipients)), envelope,
                     HEADER.pack(REC_CONTENT, len(content)), content, encode(REC_END, b"")))


# -- reading ------------------------------------------------------------------

def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _check_header(path: str, offset: int, rtype: bytes, length: int, end: int) -> None:
    """_check_header - a record header at OFFSET must be a known type that
    fits before END (the file's size); the first one a size record."""
    if rtype not in KNOWN_TYPES:
        what = "not a queue file" if offset == 0 else f"unknown record type {rtype!r}"
        raise CorruptQueueFile(path, f"{what} at offset {offset}")
    if offset == 0 and rtype != REC_SIZE:
        raise CorruptQueueFile(path, "no size record at the start: not a queue file")
    if offset + HEADER_SIZE + length > end:
        raise CorruptQueueFile(path, f"record {rtype.decode()} at offset {offset} "
                               f"runs past the end of the file")


def iter_records(path: str, f: BinaryIO | None = None,
                 file_size: int | None = None) -> Iterator[tuple[int, bytes, bytes]]:
    """iter_records - (offset, type, data) of every record; M's data is b"".

    Raises CorruptQueueFile on a record that runs past the end of the file
    or an unknown type. Stops after the E record, whatever follows."""
    for offset, rtype, data, _ in walk_records(path, f, file_size):
        yield offset, rtype, data


def walk_records(path: str, f: BinaryIO | None = None,
                 file_size: int | None = None,
                 start: int = 0) -> Iterator[tuple[int, bytes, bytes, int]]:
    """walk_records - (offset, type, data, length): iter_records with lengths.

    From F's position on, or without F from offset START of PATH; what is
    left of a small file is read in one go."""
    own = f is None
    if f is None:
        data, file_size = read_small(path, start)
        if data is not None:
            yield from walk_buffer(path, data, start)
            return
        f = open(path, "rb")
        f.seek(start)
    try:
        if file_size is None:
            file_size = os.fstat(f.fileno()).st_size
        start = f.tell()
        if file_size - start <= WHOLE_READ:
            yield from walk_buffer(path, f.read(file_size - start), start)
        else:
            yield from _walk_file(path, f, file_size, start)
    finally:
        if own:
            f.close()


def read_small(path: str, start: int = 0) -> tuple[bytes | None, int]:
    """read_small - (PATH's bytes from START on, or None when more than
    WHOLE_READ are left; the file size).

    A bare descriptor: one open, fstat, pread and close, where a buffered
    file object adds an ioctl (isatty), two lseeks and a second fstat, and
    the object itself, per queue file read."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        if size - start > WHOLE_READ:
            return None, size
        return os.pread(fd, max(0, size - start), start), size
    finally:
        os.close(fd)


def walk_buffer(path: str, data: bytes, base: int = 0) -> Iterator[tuple[int, bytes, bytes, int]]:
    """walk_buffer - walk_records over DATA, the bytes of PATH from offset BASE on."""
    end = base + len(data)
    offset = base
    while offset < end:
        pos = offset - base
        if pos + HEADER_SIZE > len(data):
            raise CorruptQueueFile(path, f"truncated record header at offset {offset}")
        rtype, length = HEADER.unpack_from(data, pos)
        # The usual record passes without a call (qmgr reads every envelope).
        if offset == 0 or rtype not in KNOWN_TYPES or offset + HEADER_SIZE + length > end:
            _check_header(path, offset, rtype, length, end)
        if rtype == REC_CONTENT:
            record = b""            # readers slice or seek to the content themselves
        elif length > MAX_ENVELOPE_RECORD:
            raise CorruptQueueFile(path, f"oversized record at offset {offset}")
        else:
            record = data[pos + HEADER_SIZE:pos + HEADER_SIZE + length]
        yield offset, rtype, record, length
        if rtype == REC_END:
            return
        offset += HEADER_SIZE + length


def _walk_file(path: str, f: BinaryIO, file_size: int,
               offset: int) -> Iterator[tuple[int, bytes, bytes, int]]:
    """_walk_file - walk_records for a big file: record by record, content skipped."""
    while True:
        raw = f.read(HEADER_SIZE)
        if not raw:
            return
        if len(raw) < HEADER_SIZE:
            raise CorruptQueueFile(path, f"truncated record header at offset {offset}")
        rtype, length = HEADER.unpack(raw)
        _check_header(path, offset, rtype, length, file_size)
        if rtype == REC_CONTENT:
            # The content is never loaded here: readers seek to it.
            f.seek(length, io.SEEK_CUR)
            data = b""
        elif length > MAX_ENVELOPE_RECORD:
            raise CorruptQueueFile(path, f"oversized record at offset {offset}")
        else:
            data = f.read(length)
        yield offset, rtype, data, length
        if rtype == REC_END:
            return
        offset += HEADER_SIZE + length


class _Builder:
    """Collects records into a Message, checking their order."""

    def __init__(self, msg: Message) -> None:
        self.msg = msg
        self.pending = Recipient("")
        self.seen_size = self.seen_end = False

    def add(self, offset: int, rtype: bytes, data: bytes, length: int) -> None:
        msg, path = self.msg, self.msg.path
        if not self.seen_size:
            if rtype != REC_SIZE:
                raise CorruptQueueFile(path, "no size record at the start: not a queue file")
            self.seen_size = True
            self._size(data)
            return
        if rtype == REC_TIME:
            try:
                msg.arrival_time = float(data)
            except ValueError:
                raise CorruptQueueFile(path,
                                       f"bad arrival time record at offset {offset}") from None
        elif rtype == REC_ATTR:
            name, eq, value = _text(data).partition("=")
            if not eq or not name:
                raise CorruptQueueFile(path, f"bad attribute record at offset {offset}")
            msg.attrs[name] = value
        elif rtype == REC_SENDER:
            msg.sender = _text(data)
        elif rtype == REC_ORIG:
            self.pending.orig = _text(data)
        elif rtype == REC_NOTIFY:
            self.pending.notify = _text(data)
        elif rtype == REC_ORCPT:
            self.pending.orcpt = _text(data)
        elif rtype in (REC_RCPT, REC_DONE):
            r = self.pending
            r.address, r.offset, r.done = _text(data), offset, rtype == REC_DONE
            msg.recipients.append(r)
            self.pending = Recipient("")
        elif rtype == REC_CONTENT:
            if msg.content_offset >= 0:
                raise CorruptQueueFile(path, "two content records")
            msg.content_offset, msg.content_length = offset + HEADER_SIZE, length
        elif rtype == REC_END:
            self.seen_end = True
        elif rtype == REC_SIZE:
            raise CorruptQueueFile(path, f"misplaced size record at offset {offset}")

    def _size(self, data: bytes) -> None:
        fields = data.split()
        if len(data) != SIZE_DATA_LEN or len(fields) != 3 or not all(x.isdigit() for x in fields):
            raise CorruptQueueFile(self.msg.path, "bad size record")
        self.msg.rcpt_count = int(fields[2])
        self._declared = (int(fields[0]), int(fields[1]))

    def finish(self) -> Message:
        msg, path = self.msg, self.msg.path
        if not self.seen_end:
            raise CorruptQueueFile(path, "truncated: no end record")
        if msg.content_offset < 0:
            raise CorruptQueueFile(path, "no message content record")
        if self._declared != (msg.content_length, msg.content_offset):
            raise CorruptQueueFile(path, "size record disagrees with the content record")
        return msg


def read_message(path: str) -> Message:
    """read_message - the envelope of the queue file at PATH.

    A small file is read whole, in one system call, and kept: its content
    then comes from memory. Raises CorruptQueueFile when the file is
    truncated or malformed, and OSError (FileNotFoundError …) when it
    cannot be read at all."""
    data, size = read_small(path)
    if data is None:
        with open(path, "rb") as f:
            return _build(path, _walk_file(path, f, size, 0))
    msg = _build(path, walk_buffer(path, data))
    msg._data = data
    return msg


def parse_message(data: bytes, path: str = "-") -> Message:
    """parse_message - a Message from the bytes of a whole queue file."""
    msg = _build(path, walk_buffer(path, data))
    msg._data = data
    return msg


def _build(path: str, walk: Iterator[tuple[int, bytes, bytes, int]]) -> Message:
    msg = Message(queue_id=os.path.basename(path), path=path)
    builder = _Builder(msg)
    for offset, rtype, data, length in walk:
        builder.add(offset, rtype, data, length)
    return builder.finish()


def mark_done(path: str, offset: int, fd: int = -1, sync: bool = True) -> None:
    """mark_done - rewrite the R record at OFFSET as D, in place, and fsync.

    FD, when given, is PATH already open for writing (a delivery agent holds
    its request's queue file open, as Postfix's agents do), else PATH is
    opened here. Marking a recipient that is already done is harmless (a
    retry after a crash between the write and the answer to qmgr).

    SYNC False leaves out the fsync, as Postfix's deliver_completed does
    (it only flushes the D to the kernel): a killed process loses nothing,
    since the byte is in the page cache; only a power loss can forget the
    mark, and then repeat the delivery. For an agent whose delivery leaves
    nothing behind (discard) that repeat changes nothing but a log line."""
    own = fd < 0
    if own:
        fd = os.open(path, os.O_RDWR)
    try:
        current = os.pread(fd, 1, offset)
        if current == REC_DONE:
            return
        if current != REC_RCPT:
            raise CorruptQueueFile(path, f"no recipient record at offset {offset}")
        os.pwrite(fd, REC_DONE, offset)
        if sync:
            os.fsync(fd)
    finally:
        if own:
            os.close(fd)


def append_attribute(path: str, name: str, value: str) -> None:
    """append_attribute - add the attribute NAME=VALUE to a complete queue file.

    The new A record lands where the end record was, with a new end record
    after it. Crash safety comes from the order of the writes: everything
    but the old end record's type byte is written and synced first (a
    reader still stops at that end record, which now merely claims the new
    bytes as its data); then that one byte becomes A, and is synced."""
    if "=" in name or not name:
        raise ValueError(f"bad attribute name: {name!r}")
    end = None
    for offset, rtype, _ in iter_records(path):
        if rtype == REC_END:
            end = offset
    if end is None:
        raise CorruptQueueFile(path, "truncated: no end record")
    data = f"{name}={value}".encode("utf-8", "surrogateescape")
    fd = os.open(path, os.O_RDWR)
    try:
        os.pwrite(fd, struct.pack(">I", len(data)) + data + encode(REC_END, b""), end + 1)
        os.fsync(fd)
        os.pwrite(fd, REC_ATTR, end)
        os.fsync(fd)
    finally:
        os.close(fd)
