"""Strict, fast CSV reading with file/line/field error messages.

pandas' C parser does the heavy lifting, but it quietly pads short rows and skips
blank lines, which would hide malformed rows and shift line numbers. So the file's
structure is checked first (vectorised with numpy on unquoted files, with the csv
module when quotes are present), every data record keeps its physical line number,
and any problem is reported as ``FILE:LINE: field 'NAME': what is wrong``.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

IntArray = npt.NDArray[np.int64]

NA_TOKENS: tuple[str, ...] = ("", "NaN", "nan", "NA", "N/A", "null", "NULL", "None")
"""Value cells that mean "no reading" (a gap), not an error."""


class IngestError(ValueError):
    """Input that cannot be ingested; the message names file, line and field."""


def located(path: str | Path, line: int | None, field: str | None, message: str) -> str:
    """``FILE:LINE: field 'NAME': message`` (parts omitted when unknown)."""
    where = f"{path}:{line}" if line is not None else str(path)
    return f"{where}: field {field!r}: {message}" if field is not None else f"{where}: {message}"


@dataclass(frozen=True)
class CsvTable:
    """A parsed CSV file: header names, data columns and the file line of every record."""

    path: str
    header: list[str]
    frame: pd.DataFrame  # text columns as strings, value columns as float64 (NaN = empty)
    lines: IntArray  # physical line number (1-based) of each row of ``frame``


def read_bytes(path: str | Path) -> bytes:
    """The file's bytes, with a clear error if it cannot be read or is not UTF-8."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise IngestError(f"{path}: cannot read file: {err.strerror or err}") from err
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise IngestError(located(path, line, None, "file is not UTF-8 text")) from err
    return data.removeprefix(b"\xef\xbb\xbf")


def parse_header(path: str | Path, data: bytes) -> list[str]:
    """Header names from line 1 (stripped); rejects empty and duplicate names."""
    first = data.split(b"\n", 1)[0].decode("utf-8").rstrip("\r")
    if not first.strip():
        raise IngestError(located(path, 1, None, "missing header line (expected e.g. timestamp,tag,value)"))
    if "\r" in first:
        raise IngestError(located(path, 1, None, "carriage return without line feed (old Mac line endings?): "
                                                 "save the file with \\n or \\r\\n line endings"))
    try:
        header = [name.strip() for name in next(csv.reader([first]))]
    except csv.Error as err:
        raise IngestError(located(path, 1, None, f"cannot parse the header line: {err}")) from None
    seen: set[str] = set()
    for name in header:
        if not name:
            raise IngestError(located(path, 1, None, "empty column name in header"))
        if name in seen:
            raise IngestError(located(path, 1, name, "column appears twice in header"))
        seen.add(name)
    return header


def _record_lines_unquoted(path: str | Path, data: bytes, n_fields: int) -> IntArray:
    """Line numbers of non-blank data lines; every one must have ``n_fields`` fields."""
    buf = np.frombuffer(data, dtype=np.uint8)
    newlines = np.flatnonzero(buf == 10)
    cr = np.flatnonzero(buf[:-1] == 13)
    lone_cr = cr[buf[cr + 1] != 10]  # pandas ends a line there, this count would not: say so
    if len(lone_cr):
        line = int(np.searchsorted(newlines, lone_cr[0])) + 1
        raise IngestError(located(path, line, None, "carriage return without line feed inside a line"))
    ends = newlines if data.endswith(b"\n") else np.append(newlines, len(buf))
    starts = np.concatenate(([0], newlines + 1))[: len(ends)]
    lengths = ends - starts
    has_cr = lengths > 0
    has_cr[has_cr] = buf[ends[has_cr] - 1] == 13
    lengths = lengths - has_cr
    commas = np.flatnonzero(buf == 44)
    fields = np.searchsorted(commas, ends) - np.searchsorted(commas, starts) + 1
    data_lines = np.arange(1, len(ends))  # 0-based index of lines after the header
    nonblank = data_lines[lengths[1:] > 0]
    bad = nonblank[fields[nonblank] != n_fields]
    if len(bad):
        i = int(bad[0])
        raise IngestError(
            located(path, i + 1, None, f"malformed row: {fields[i]} fields, the header has {n_fields}")
        )
    return (nonblank + 1).astype(np.int64)


def _record_lines_quoted(path: str | Path, data: bytes, n_fields: int) -> IntArray:
    """As `_record_lines_unquoted`, with the csv module's quoting rules (slower)."""
    reader = csv.reader(io.StringIO(data.decode("utf-8"), newline=""))
    next(reader, None)
    lines: list[int] = []
    previous_end = reader.line_num
    try:
        for row in reader:
            start = previous_end + 1
            previous_end = reader.line_num
            if not row:
                continue
            if len(row) != n_fields:
                raise IngestError(located(path, start, None, f"malformed row: {len(row)} fields, the header has {n_fields}"))
            lines.append(start)
    except csv.Error as err:  # a field over csv.field_size_limit(), e.g. an unclosed quote
        raise IngestError(located(path, previous_end + 1, None, f"cannot parse CSV: {err}")) from None
    return np.asarray(lines, dtype=np.int64)


def _locate_bad_number(path: str, frame_text: pd.DataFrame, lines: IntArray, columns: list[str]) -> None:
    for name in columns:
        text = frame_text[name]
        numbers = pd.to_numeric(text, errors="coerce")
        bad = np.flatnonzero((numbers.isna() & text.notna()).to_numpy())
        if len(bad):
            i = int(bad[0])
            raise IngestError(located(path, int(lines[i]), name, f"{text.iloc[i]!r} is not a number"))


def _only_zero_one(values: npt.NDArray[np.float64]) -> bool:
    present = values[~np.isnan(values)]
    return len(present) > 0 and bool(np.all((present == 0.0) | (present == 1.0)))


def read_table(path: str | Path, data: bytes, header: list[str], text_columns: set[str]) -> CsvTable:
    """Parse ``data`` (already checked by `read_bytes`/`parse_header`) into a `CsvTable`.

    Columns in ``text_columns`` stay strings; all others must hold numbers or one of
    `NA_TOKENS` (then NaN). Non-finite numbers are rejected.
    """
    path = str(path)
    n_fields = len(header)
    if b'"' in data:
        lines = _record_lines_quoted(path, data, n_fields)
    else:
        lines = _record_lines_unquoted(path, data, n_fields)
    value_columns = [name for name in header if name not in text_columns]
    text_dtypes = {name: str for name in text_columns}
    common = {
        "header": 0, "names": header, "keep_default_na": False, "skip_blank_lines": True,
        "na_values": {name: list(NA_TOKENS) for name in value_columns}, "encoding": "utf-8",
    }
    try:
        try:
            frame = pd.read_csv(
                io.BytesIO(data), dtype={**text_dtypes, **{name: np.float64 for name in value_columns}},
                **common,  # type: ignore[call-overload]
            )
        except ValueError:
            frame_text = pd.read_csv(io.BytesIO(data), dtype=str, **common)  # type: ignore[call-overload]
            if len(frame_text) != len(lines):
                raise IngestError(f"{path}: could not parse the file consistently (a quoted field spans lines?)") \
                    from None
            _locate_bad_number(path, frame_text, lines, value_columns)
            frame = frame_text.copy()
            for name in value_columns:
                frame[name] = pd.to_numeric(frame_text[name], errors="coerce").astype(np.float64)
    except pd.errors.ParserError as err:
        raise IngestError(f"{path}: cannot parse CSV: {err}") from err
    if len(frame) != len(lines):
        raise IngestError(f"{path}: could not parse the file consistently (a quoted field spans lines?)")
    # pandas reads a column holding only true/false words (and gaps) as 1.0/0.0: recheck 0/1 columns' text
    zero_one = [name for name in value_columns if _only_zero_one(frame[name].to_numpy(dtype=np.float64))]
    if zero_one:
        text = pd.read_csv(io.BytesIO(data), dtype=str, usecols=zero_one, **common)  # type: ignore[call-overload]
        _locate_bad_number(path, text, lines, zero_one)
    for name in value_columns:
        values = frame[name].to_numpy(dtype=np.float64)
        bad = np.flatnonzero(np.isinf(values))
        if len(bad):
            i = int(bad[0])
            raise IngestError(located(path, int(lines[i]), name, f"{values[i]} is not a finite number"))
    return CsvTable(path, header, frame, lines)
