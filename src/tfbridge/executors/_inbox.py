"""Reading a worker's replies in the main process without ever blocking, and checking them.

A worker sends each reply as one message of :class:`multiprocessing.connection.Connection`'s framing: a 4-byte
big-endian length (or -1 and an 8-byte length), then a pickle. ``Connection.recv_bytes`` would block until a
whole message is in, so a worker frozen half-way through a big reply (SIGSTOP, a debugger, a full machine) or
a length that is not one would hold the main process for good. An :class:`Inbox` instead reads whatever the
socket holds each time it is readable and keeps partial messages until they are whole, so the caller's wait
stays its own (``timeout=``), and it refuses bytes that cannot be a reply as soon as it sees them.
"""

from __future__ import annotations

import os
import pickle
import socket
import struct
from typing import Any

_LENGTH = struct.Struct("!i")
_LONG_LENGTH = struct.Struct("!Q")
_READ_BYTES = 256 * 1024  # the usual room for a read: more than a socket buffer holds
_PREPARE_BYTES = 64 * 1024 * 1024  # a declared length up to this is given room at once; beyond, room follows data
_PROTO = 0x80  # the first byte of every pickle of protocol 2 and later
_STOP = 0x2E  # the last byte of every pickle


def bound_sends(fd: int, timeout: float | None) -> None:
    """Make a send on the socket ``fd`` that cannot go on for ``timeout`` seconds (a worker that stopped reading,
    with the socket's buffer full) fail with an OSError instead of waiting for good."""
    if timeout is None:
        return
    with socket.socket(fileno=os.dup(fd)) as sock:  # the same socket; closing the duplicate leaves it open
        seconds = int(timeout)
        sock.setsockopt(
            socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", seconds, int((timeout - seconds) * 1e6))
        )


class CorruptMessage(Exception):
    """Bytes on a worker's connection that are not a reply; the message says what was wrong, and ``before``
    holds the messages that came whole before them."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.before: list[Any] = []


class Inbox:
    """The bytes one worker has sent that are not yet whole messages."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._room(bytearray(_READ_BYTES))
        self.start = 0  # the first byte not yet taken as a message
        self.end = 0  # the end of the bytes received
        self.expected = 0  # the size (length header included) of the message being received; 0: not known yet

    def pending(self) -> tuple[int, int] | None:
        """(bytes received, bytes declared; 0 while the length is not in) of a message received in part; None
        when there is none."""
        have = self.end - self.start
        return (have, self.expected) if have else None

    def read(self) -> list[Any]:
        """Read what the socket holds and return the messages it completes, unpickled, in order.

        Call it only when the socket is readable (``multiprocessing.connection.wait``): it reads once, so it
        never blocks. Raises EOFError when the worker's end is closed and :class:`CorruptMessage` for bytes that
        cannot be a reply (with the messages before them; nothing after them can be trusted)."""
        if self.start == self.end:
            self.start = self.end = 0
        if self.expected or len(self.buf) - self.end < _READ_BYTES:
            self._make_room()
        got = os.readv(self.fd, [self.view[self.end :]])
        if got == 0:
            raise EOFError
        self.end += got
        out: list[Any] = []
        try:
            while self.start < self.end and self._message(out):
                pass
        except CorruptMessage as exc:
            exc.before = out
            raise
        return out

    def _message(self, out: list[Any]) -> bool:
        """Take the next whole message into ``out``; False when there is none."""
        head, size = self._size()
        if size == 0 or self.end - self.start < size:
            self.expected = size
            return False
        if self.buf[self.start + size - 1] != _STOP:
            raise CorruptMessage(f"a message of {size - head} bytes that does not end as a pickle does")
        try:
            out.append(pickle.loads(self.view[self.start + head : self.start + size]))
        except Exception as exc:
            raise CorruptMessage(f"a message that does not unpickle ({type(exc).__name__}: {exc})") from None
        self.start += size
        self.expected = 0
        return True

    def _size(self) -> tuple[int, int]:
        """(length header, whole size) of the message starting at ``start``; (0, 0) while its header is not in."""
        have = self.end - self.start
        if have < _LENGTH.size:
            return 0, 0
        (length,) = _LENGTH.unpack_from(self.buf, self.start)
        head = _LENGTH.size
        if length == -1:
            head += _LONG_LENGTH.size
            if have < head:
                return 0, 0
            (length,) = _LONG_LENGTH.unpack_from(self.buf, self.start + _LENGTH.size)
        if length < 2:  # the shortest pickle, "N.", has 2 bytes
            raise CorruptMessage(f"a message whose length prefix says {length} bytes")
        if have > head and self.buf[self.start + head] != _PROTO:
            first = bytes(self.buf[self.start : self.start + min(have, head + 8)])
            msg = f"a message that does not start as a pickle does (its first bytes: {first!r})"
            raise CorruptMessage(msg)
        return head, head + length

    def _make_room(self) -> None:
        """Room after ``end`` for the next read: the rest of the message being received when its length is
        known, else ``_READ_BYTES``. Past ``_PREPARE_BYTES`` the room only doubles as bytes arrive, so a false
        length cannot make it allocate what never comes. Bytes already taken are dropped first."""
        have = self.end - self.start
        if have == 0 and len(self.buf) > 4 * _READ_BYTES:
            self._room(bytearray(_READ_BYTES))  # a big message is done: its room goes
        need = _READ_BYTES
        if self.expected:
            need = min(self.expected, max(_PREPARE_BYTES, 2 * have)) - have
        if len(self.buf) - self.end >= need:
            return
        if len(self.buf) - have >= need:
            self.buf[:have] = self.buf[self.start : self.end]
        else:
            grown = bytearray(have + need)
            grown[:have] = self.buf[self.start : self.end]
            self._room(grown)
        self.start, self.end = 0, have

    def _room(self, buf: bytearray) -> None:
        self.buf, self.view = buf, memoryview(buf)  # never resized in place: replaced
