"""Rows of a bulk upload file, read as a stream: CSV, JSON array or JSON Lines.

Each reader yields (row number, fields) with fields shaped like a v1 meter event
(`event_name`, `timestamp`, optional `identifier`, `payload`), or raises `FileProblem`
when the file as a whole can't be read. Memory stays flat whatever the file size.
"""

import csv
import gzip
import io
import json
import zlib
from collections.abc import Iterator
from typing import IO

from metering.form import MAX_DEPTH
from metering.wire import depth

CHUNK = 1 << 16
MAX_ROW_CHARS = 1 << 20  # a meter event is a few hundred bytes; a longer row is refused, not buffered
REQUIRED_COLUMNS = ("event_name", "timestamp")
FORMATS = (".csv", ".json", ".jsonl")
TOO_DEEP = f"The row is nested more than {MAX_DEPTH} levels deep."
_LONG_LINE = "\x00metering:line-too-long\x00"  # stands in for a CSV line over MAX_ROW_CHARS


class FileProblem(Exception):
    """The whole file fails (status `failed`), with a reason for the result file."""


def file_format(key: str) -> tuple[str, bool]:
    """(".csv" | ".json" | ".jsonl", gzip?) from the object key, or FileProblem."""
    name = key.lower()
    gz = name.endswith(".gz")
    if gz:
        name = name[:-3]
    for fmt in FORMATS:
        if name.endswith(fmt):
            return fmt, gz
    raise FileProblem(f"Unsupported file extension for {key}: use .csv, .json or .jsonl, optionally .gz.")


def rows(stream: IO[bytes], fmt: str, whole: bool = True) -> Iterator[tuple[int, object]]:
    """Rows of a file, or (`whole` False) of a slice of one, which may hold blank lines only."""
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="" if fmt == ".csv" else None)
    try:
        if fmt == ".csv":
            yield from csv_rows(text)
        elif fmt == ".jsonl":
            yield from jsonl_rows(text, whole)
        else:
            yield from json_array_rows(text)
    except UnicodeDecodeError as exc:
        raise FileProblem(f"The file is not UTF-8 text: {exc.reason}.") from exc
    except (gzip.BadGzipFile, zlib.error, EOFError) as exc:  # a broken or truncated .gz
        raise FileProblem(f"The file could not be read: {exc}.") from exc
    except csv.Error as exc:  # the header row (data rows are rejected one by one)
        raise FileProblem(f"Invalid CSV: {exc}.") from exc
    # Anything else (a connection reset or timeout while streaming from S3) is transient: it
    # propagates, the invocation fails and the file resumes from its checkpoint.


def _lines(text: IO[str]) -> Iterator[str]:
    """The file's lines, each read at most MAX_ROW_CHARS at a time: a longer line is skipped
    in pieces and stands as one `_LONG_LINE`, so memory stays bounded."""
    while line := text.readline(MAX_ROW_CHARS + 1):
        if len(line) > MAX_ROW_CHARS:
            while line and not line.endswith(("\n", "\r")):
                line = text.readline(MAX_ROW_CHARS)
            yield _LONG_LINE + "\n"
            continue
        yield line


def csv_rows(text: IO[str]) -> Iterator[tuple[int, object]]:
    reader = csv.reader(_lines(text))
    header = next((cells for cells in reader if any(c.strip() for c in cells)), None)
    if not header:
        raise FileProblem("The file is empty.")
    header = [h.strip() for h in header]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if not any(h.startswith("payload_") for h in header):
        missing.append("payload_<key>")
    if missing:
        raise FileProblem(f"Missing mandatory column(s): {', '.join(missing)}.")
    number = 0
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # e.g. a cell over csv.field_size_limit(): this row only
            number += 1
            yield number, f"Invalid CSV row: {exc}."
            continue
        number += 1
        if cells == [_LONG_LINE]:
            yield number, f"The line is longer than {MAX_ROW_CHARS} characters."
            continue
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            yield number, f"Row has {len(cells)} cells; the header has {len(header)}."
            continue
        fields: dict = {"payload": {}}
        for name, cell in zip(header, cells, strict=True):
            if name.startswith("payload_"):
                if cell != "":
                    fields["payload"][name[len("payload_") :]] = cell
            elif cell != "":
                fields[name] = cell
        yield number, fields


def jsonl_rows(text: IO[str], whole: bool = True) -> Iterator[tuple[int, object]]:
    seen, number = False, 0
    while line := text.readline(MAX_ROW_CHARS + 1):
        number += 1
        if len(line) > MAX_ROW_CHARS:
            while line and not line.endswith("\n"):  # skip the rest of the line, a piece at a time
                line = text.readline(MAX_ROW_CHARS)
            seen = True
            yield number, f"The line is longer than {MAX_ROW_CHARS} characters."
            continue
        if not line.strip():
            continue
        seen = True
        try:
            row = json.loads(line, parse_float=str, parse_int=str)
        except json.JSONDecodeError as exc:
            yield number, f"Invalid JSON: {exc.msg}."
            continue
        except RecursionError:
            yield number, TOO_DEEP
            continue
        yield number, TOO_DEEP if depth(row) > MAX_DEPTH else row
    if not seen and whole:
        raise FileProblem("The file is empty.")


def json_array_rows(text: IO[str]) -> Iterator[tuple[int, object]]:
    """Elements of a top-level JSON array, decoded one at a time from a sliding buffer."""
    decoder = json.JSONDecoder(parse_float=str, parse_int=str)
    buffer, pos, number = "", 0, 0
    eof = False

    def fill() -> None:
        nonlocal buffer, pos, eof
        chunk = text.read(CHUNK)
        eof = not chunk
        buffer = buffer[pos:] + chunk
        pos = 0

    def skip_space() -> None:
        nonlocal pos
        while True:
            while pos < len(buffer) and buffer[pos] in " \t\r\n":
                pos += 1
            if pos < len(buffer) or eof:
                return
            fill()

    fill()
    skip_space()
    if pos >= len(buffer):
        raise FileProblem("The file is empty.")
    if buffer[pos] != "[":
        raise FileProblem("A .json file must hold one JSON array of meter events.")
    pos += 1
    expect_value = True
    while True:
        skip_space()
        if pos >= len(buffer):
            raise FileProblem("The JSON array is not closed.")
        if buffer[pos] == "]":
            return
        if not expect_value:
            if buffer[pos] != ",":
                raise FileProblem(f"Invalid JSON after element {number}.")
            pos += 1
            expect_value = True
            continue
        while True:
            try:
                value, end = decoder.raw_decode(buffer, pos)
                if end == len(buffer) and not eof:
                    raise ValueError("may continue")  # a number could go on in the next chunk
                break
            except ValueError:
                if eof or len(buffer) - pos > MAX_ROW_CHARS:  # invalid, not just cut by the chunk
                    raise FileProblem(f"Invalid JSON in element {number + 1}.") from None
                fill()
            except RecursionError:  # its end can't be found without decoding it
                raise FileProblem(f"Element {number + 1} is nested too deeply to be read.") from None
        number += 1
        pos = end
        expect_value = False
        yield number, TOO_DEEP if depth(value) > MAX_DEPTH else value


BOM = b"\xef\xbb\xbf"


def slice_plan(stream: IO[bytes], fmt: str, target: int) -> list[tuple[int, int, int, int]]:
    """Cut a plain .csv or .jsonl file into byte ranges of about `target` bytes, each ending
    after a line end: (start, end, rows before it, end of the CSV header line). One pass over
    the bytes, counting line ends (C speed), memory flat.

    Rows are lines only when no line end can be inside a row and every line end is one: a
    CSV with a `"` (a quoted cell may hold a line end) or a file with a lone carriage return
    gives [] (read whole, not split)."""
    spans: list[tuple[int, int, int]] = []  # (cut, line ends before the cut)
    header_end, header_ends = (0, 0) if fmt == ".jsonl" else (None, 0)
    offset, ends, next_cut, carry, head = 0, 0, target, b"", b""
    while True:
        chunk = stream.read(CHUNK * 16)
        data = carry + chunk
        if chunk and data.endswith(b"\r"):
            data, carry = data[:-1], b"\r"  # decided with the next byte
        else:
            carry = b""
        if not data:
            break
        if (fmt == ".csv" and b'"' in data) or data.count(b"\r") != data.count(b"\r\n"):
            return []
        if header_end is None:
            head += data
            header_end, header_ends = _csv_header_end(head)
            if header_end is None and len(head) > MAX_ROW_CHARS:
                return []
        start = 0
        while header_end is not None:
            i = data.find(b"\n", max(start, next_cut - 1 - offset, header_end - offset))
            if i < 0:
                break
            cut = offset + i + 1
            spans.append((cut, ends + data.count(b"\n", 0, i + 1)))
            next_cut, start = cut + target, i + 1
        ends += data.count(b"\n")
        offset += len(data)
    if header_end is None:
        return []
    cuts = [(0, header_ends)] + [s for s in spans if s[0] < offset]
    return [
        (cut, cuts[k + 1][0] if k + 1 < len(cuts) else offset, before - header_ends, header_end)
        for k, (cut, before) in enumerate(cuts)
    ]


def _csv_header_end(head: bytes) -> tuple[int | None, int]:
    """(offset after the header line, line ends up to it) of the file's start, as `csv_rows`
    finds the header (the first line with a non-blank cell); (None, 0) while not read yet."""
    position = 0
    for ends, line in enumerate(head.split(b"\n")[:-1], start=1):
        text = line.removeprefix(BOM) if position == 0 else line
        position += len(line) + 1
        if any(cell.strip() for cell in text.decode("utf-8", "replace").rstrip("\r").split(",")):
            return position, ends
    return None, 0
