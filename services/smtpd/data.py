"""Reading message content: the DATA scanner and the BDAT chunk converter.

DATA (RFC 5321 4.1.1.4): the content ends only at <CR><LF>.<CR><LF>. A
bare LF or bare CR next to the dot never ends it, so a message can never
be split in two by a sender that means to smuggle a second one (the SMTP
smuggling attack, the reason Postfix 3.9 has `smtpd_forbid_bare_newline`).
Lines lose their CR, a leading dot is removed (dot-unstuffing, 4.5.2), and
the content is kept with LF line ends, as cleanup wants it. A line that
ends in a bare LF is taken as a line (normalize) and noted, so the session
can refuse the message when `smtpd_forbid_bare_newline = reject`.
A local pipe (`sendmail -bs`, dot_lf_ends) is no network client: there a
lone `.` ends the content whatever its line end, as a script writes it.

BDAT (RFC 3030): chunks are exact byte counts; only CRLF -> LF applies. A
bare LF is noted there too (RFC 3030 section 3 wants canonical MIME text), so
`smtpd_forbid_bare_newline = reject` refuses such content as well.

Memory stays bounded: content past the size limit is counted but dropped,
and a line is never held whole (long lines are passed on in pieces).

Interface:
    s = DataScanner(size_limit, dot_lf_ends=False)   s.feed(bytes) -> bytes consumed
        s.done, s.too_big, s.bare_lf, s.size, s.content (bytearray)
    c = ChunkConverter(size_limit)     c.feed(bytes); c.finish()
        c.too_big, c.bare_lf, c.size, c.content
"""

from __future__ import annotations

# A partial line longer than this is passed on before its end arrives.
PARTIAL_LINE_FLUSH = 8192


class _Sink:
    """Collects content up to a size limit (0 = no limit), then only counts."""

    def __init__(self, size_limit: int) -> None:
        self.size_limit = size_limit
        self.content = bytearray()
        self.size = 0
        self.too_big = False

    def put(self, data: bytes) -> None:
        self.size += len(data)
        if self.too_big:
            return
        if self.size_limit and self.size > self.size_limit:
            self.too_big = True
            self.content = bytearray()      # the message is refused; free it now
            return
        self.content += data


class DataScanner(_Sink):
    """The content of one DATA command, fed as it arrives."""

    def __init__(self, size_limit: int = 0, dot_lf_ends: bool = False) -> None:
        super().__init__(size_limit)
        self.dot_lf_ends = dot_lf_ends
        self.done = False
        self.bare_lf = False
        self._partial = bytearray()   # the current line, not yet ended
        self._line_start = True       # _partial begins at the start of a line
        self._prev_crlf = True        # the previous line ended in CRLF (DATA's own did)

    def feed(self, data: bytes) -> int:
        """feed - scan DATA bytes; returns how many belong to the message.

        Bytes after the end-of-data line are not consumed: they are the
        client's next (pipelined) commands."""
        if self.done:
            return 0
        last_nl = data.rfind(b"\n")
        if last_nl < 0:
            self._add_partial(data)
            return len(data)
        carried = len(self._partial)
        region = bytes(self._partial) + data[:last_nl + 1] if carried else data[:last_nl + 1]
        line_start = self._line_start
        self._partial = bytearray()
        self._line_start = True
        taken = self._fast_path(region, line_start)
        if taken < len(region):
            end = taken + self._scan_lines(region[taken:], line_start or taken > 0)
            if self.done:
                return end - carried
        self._add_partial(data[last_nl + 1:])
        return len(data)

    def _fast_path(self, region: bytes, line_start: bool) -> int:
        """_fast_path - the whole lines before the first one with a leading dot,
        when all end in CRLF: one replace instead of a loop over the lines.
        Returns how many bytes of REGION it took (0: none, scan it all).
        The end of the content, <CR><LF>.<CR><LF>, is such a dot, so without
        the cut every message went through the loop line by line."""
        if line_start and region[:1] == b".":
            return 0
        cut = region.find(b"\n.") + 1 or len(region)
        head = region[:cut] if cut < len(region) else region
        if head.count(b"\n") != head.count(b"\r\n"):
            return 0
        self.put(head.replace(b"\r\n", b"\n"))
        self._prev_crlf = True
        return cut

    def _scan_lines(self, region: bytes, line_start: bool) -> int:
        """_scan_lines - line by line; returns the offset in REGION after the message."""
        pos = 0
        while pos < len(region):
            nl = region.index(b"\n", pos)
            line = region[pos:nl]
            crlf = line.endswith(b"\r")
            if crlf:
                line = line[:-1]
            else:
                self.bare_lf = True
            if line_start and line[:1] == b".":
                if line == b"." and (self.dot_lf_ends or (crlf and self._prev_crlf)):
                    self.done = True
                    return nl + 1
                line = line[1:]
            self.put(line + b"\n")
            self._prev_crlf = crlf
            line_start = True
            pos = nl + 1
        return pos

    def _add_partial(self, data: bytes) -> None:
        """_add_partial - keep an unfinished line; pass long ones on in pieces."""
        self._partial += data
        if len(self._partial) <= PARTIAL_LINE_FLUSH:
            return
        # A final CR may be the first half of a CRLF: keep it with the line.
        keep = 1 if self._partial.endswith(b"\r") else 0
        piece = bytes(self._partial[:len(self._partial) - keep])
        if self._line_start and piece[:1] == b".":
            piece = piece[1:]
        self.put(piece)
        self._partial = self._partial[len(self._partial) - keep:]
        self._line_start = False


class ChunkConverter(_Sink):
    """The content of a BDAT sequence: CRLF becomes LF, nothing else changes."""

    def __init__(self, size_limit: int = 0) -> None:
        super().__init__(size_limit)
        self._cr_pending = False
        self.bare_lf = False

    def feed(self, data: bytes) -> None:
        if self._cr_pending:
            data = b"\r" + data
            self._cr_pending = False
        if not self.bare_lf and data.count(b"\n") != data.count(b"\r\n"):
            self.bare_lf = True
        if data.endswith(b"\r"):
            data = data[:-1]
            self._cr_pending = True
        self.put(data.replace(b"\r\n", b"\n"))

    def finish(self) -> None:
        """finish - after the LAST chunk: a lone final CR stays, a last line gets its LF."""
        if self._cr_pending:
            self.put(b"\r")
            self._cr_pending = False
        if self.content and not self.content.endswith(b"\n") and not self.too_big:
            self.put(b"\n")
