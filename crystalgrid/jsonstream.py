"""Read a JSON list or object item by item, in memory bounded by the largest item.

``json.load`` holds a whole file (and every Python object in it) in memory: ~10 GB for a
1 GB file of structures. :func:`iter_json` reads the top-level list or object of a text
stream in blocks and decodes one item at a time with ``json.JSONDecoder.raw_decode``; the
items need not fit in one block. Errors name the line and column in the whole file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import IO, Any

__all__ = ["JsonTop", "iter_json"]

_BLOCK = 1 << 20  # characters read at a time
_WHITESPACE = " \t\n\r"


class _Reader:
    """A text stream as a buffer that grows on demand, with absolute positions for errors."""

    def __init__(self, fh: IO[str]) -> None:
        self.fh = fh
        self.buffer = ""
        self.pos = 0  # position in the buffer
        self.lines_before = 0
        self.column_start = 0  # absolute offset of the start of the current line
        self.offset = 0  # absolute offset of the buffer's start
        self.eof = False

    def more(self) -> bool:
        """Read another block; False at the end of the stream."""
        if self.eof:
            return False
        block = self.fh.read(_BLOCK)
        if not block:
            self.eof = True
            return False
        done = self.buffer[: self.pos]  # drop what was decoded, keeping line counts
        self.lines_before += done.count("\n")
        if "\n" in done:
            self.column_start = self.offset + done.rindex("\n") + 1
        self.offset += self.pos
        self.buffer = self.buffer[self.pos :] + block
        self.pos = 0
        return True

    def skip_space(self) -> str:
        """The next character that is not whitespace ("" at the end)."""
        while True:
            while self.pos < len(self.buffer) and self.buffer[self.pos] in _WHITESPACE:
                self.pos += 1
            if self.pos < len(self.buffer):
                return self.buffer[self.pos]
            if not self.more():
                return ""

    def value(self, decoder: json.JSONDecoder) -> Any:
        """Decode the JSON value at the position, reading more until it is whole."""
        while True:
            try:
                value, end = decoder.raw_decode(self.buffer, self.pos)
            except json.JSONDecodeError as exc:
                # A value cut by the end of the buffer fails too: read on, unless at the end.
                if self.more():
                    continue
                raise self.error(exc.msg, exc.pos) from None
            if end == len(self.buffer) and not self.eof and self.more():
                continue  # a number may go on in the next block: decode it again
            self.pos = end
            return value

    def error(self, message: str, pos: int | None = None) -> json.JSONDecodeError:
        """A ``JSONDecodeError`` whose line and column are those in the whole file."""
        pos = self.pos if pos is None else pos
        before = self.buffer[:pos]
        line = self.lines_before + before.count("\n") + 1
        start = self.offset + before.rindex("\n") + 1 if "\n" in before else self.column_start
        error = json.JSONDecodeError(message, "", 0)
        error.lineno, error.colno, error.pos = (
            line,
            self.offset + pos - start + 1,
            self.offset + pos,
        )
        error.args = (f"{message}: line {line} column {error.colno} (char {error.pos})",)
        return error

    def expect(self, char: str) -> None:
        if self.skip_space() != char:
            found = self.buffer[self.pos : self.pos + 1] or "end of file"
            raise self.error(f"Expecting {char!r}, found {found!r}")
        self.pos += 1


class JsonTop:
    """The top level of a JSON document: ``kind`` is ``"list"``, ``"object"`` or ``"value"``.

    ``items()`` yields a list's elements, or an object's ``(key, value)`` pairs, one at a
    time; for any other document, the one value.
    """

    def __init__(self, fh: IO[str]) -> None:
        self._reader = _Reader(fh)
        self._decoder = json.JSONDecoder()
        first = self._reader.skip_space()
        self.kind = {"[": "list", "{": "object"}.get(first, "value")

    def items(self) -> Iterator[Any]:
        """The items (see the class docstring).

        Raises:
            json.JSONDecodeError: the document is not valid JSON (line and column of the
                whole file).
        """
        reader, decoder = self._reader, self._decoder
        if self.kind == "value":
            yield reader.value(decoder)
            self._end()
            return
        close = "]" if self.kind == "list" else "}"
        reader.pos += 1
        if reader.skip_space() == close:
            reader.pos += 1
            self._end()
            return
        while True:
            if self.kind == "object":
                if reader.skip_space() != '"':
                    raise reader.error("Expecting property name enclosed in double quotes")
                key = reader.value(decoder)
                reader.expect(":")
                reader.skip_space()
                yield key, reader.value(decoder)
            else:
                reader.skip_space()
                yield reader.value(decoder)
            following = reader.skip_space()
            reader.pos += 1
            if following == close:
                break
            if following != ",":
                raise reader.error(f"Expecting ',' delimiter or {close!r}", reader.pos - 1)
        self._end()

    def _end(self) -> None:
        if self._reader.skip_space():
            raise self._reader.error("Extra data")


def iter_json(fh: IO[str]) -> JsonTop:
    """The top level of the JSON document in ``fh`` (see :class:`JsonTop`)."""
    return JsonTop(fh)
