"""Hypothesis fuzzing of tag maps (issue #8): a valid map or a `TagMapError` naming file and key.

Tag maps come in the two formats ``db.tagmap`` reads, TOML and CSV. Generated maps
carry their meaning, and a small model of the format says whether each must load: a
loaded map must map exactly the generated tags, a refused one must raise `TagMapError`
naming the file and an offending key (by name, or by a line that holds it). Arbitrary
text and bytes give a map or a `TagMapError`. Any tag name a map accepts must be
stored exactly by ingest on both backends, never refused by the database.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from db.engine import DatabaseError
from db.ingest import IngestError, ingest_csv
from db.roles import ROLES
from db.tagmap import TagMap, TagMapError
from tests._fuzz_support import FIXTURE_OK, snapshot, stored, toml_string, toml_value

T0_TEXT, T0_S = "2024-01-15T12:00:00Z", 1705320000
TAGS = ["DC1.IT_KW", "AHU-1.SAT", "Hallé ✓", "ignore", "tags", "role", "a.b", 'qu"ote', "tab\there", " ", "x" * 201]
ROLE_TEXTS = ["it_power_kw", "supply_air_c", "chw_supply_c", "chw_suply_c", "ignore", "", " it_power_kw"]
UNITS = {"it_power_kw": ["kW", "kilowatt"], "supply_air_c": ["C", "degC", "°C"], "chw_supply_c": ["C", "degC"]}
_files = itertools.count()


# -- tag maps -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Problem:
    """Something wrong with a map: the message must name one of ``names`` or point at one of ``lines``."""

    names: tuple[str, ...]
    lines: tuple[int, ...] = ()


def entry_problem(tag: str, role: Any, unit: Any, extra: bool, line: int) -> Problem | None:
    """The model of one [tags] entry (TOML) or row (CSV, ``extra`` unused)."""
    where = Problem((repr(tag),), (line,))
    if not isinstance(role, str) or extra or (unit is not None and not isinstance(unit, str)):
        return where
    if not tag.strip() or len(tag) > 200 or any(ord(c) < 32 or ord(c) == 127 for c in tag) or role not in ROLES:
        return where
    if isinstance(unit, str) and unit.strip() and unit.strip() not in UNITS.get(role, []):
        return where
    return None


def check_map(path: Path, text: str, roles: dict[str, str], ignored: set[str], problems: list[Problem]) -> None:
    path.write_text(text, encoding="utf-8")
    try:
        tag_map = TagMap.load(path)
    except TagMapError as err:
        event("refused")
        message = str(err)
        assert problems, f"refused a good map: {message}"
        assert message.startswith(str(path)), message
        located = re.match(re.escape(str(path)) + r":(\d+):", message)
        lines = {line for p in problems for line in p.lines}
        if located:
            assert int(located.group(1)) in lines, (message, problems)
        assert located or any(name in message for p in problems for name in p.names), (message, problems)
        return
    event("loaded")
    assert not problems, f"loaded a map with problems {problems}"
    assert {t: tag_map.role_for(t) for t in roles} == roles
    assert all(tag_map.role_for(t) is None for t in ignored)
    assert len(tag_map) == len(roles)


@st.composite
def toml_maps(draw: st.DrawFn) -> tuple[str, dict[str, str], set[str], list[Problem]]:
    lines: list[str] = []
    problems: list[Problem] = []
    ignore = draw(st.lists(st.sampled_from(TAGS), max_size=2) | st.just(None) | st.sampled_from([["x", 1], "x"]))
    if ignore is not None:
        lines.append(f"ignore = {toml_value(ignore)}")
        if not isinstance(ignore, list) or not all(isinstance(t, str) for t in ignore):
            problems.append(Problem(("'ignore'",)))
    if draw(st.integers(0, 9)) == 0:
        lines.append("extra = 1")
        problems.append(Problem(("'extra'",)))
    entries = draw(st.lists(st.tuples(
        st.sampled_from(TAGS), st.sampled_from(ROLE_TEXTS[:3] * 3 + ROLE_TEXTS[3:]) | st.integers(0, 3),
        st.none() | st.none() | st.sampled_from(["", "kW", "degC", "F", "furlong", 5]), st.integers(0, 9)),
        max_size=4, unique_by=lambda e: e[0]))
    if entries and draw(st.integers(0, 9)) == 0:
        entries.append(draw(st.sampled_from(entries)))  # a key given twice
    roles: dict[str, str] = {}
    owner: dict[str, str] = {}
    keys: set[str] = set()
    if draw(st.integers(0, 9)) > 0:
        lines.append("[tags]")
    elif entries:
        lines.append("tags = 5")
        entries = []
    if not entries:
        problems.append(Problem(("[tags]",)))
    for tag, role, unit, style in entries:
        line = len(lines) + 1
        if tag in keys:
            problems.append(Problem(("invalid TOML",)))  # a key given twice
        keys.add(tag)
        if style == 0:
            lines.append(f"{toml_string(tag)} = {toml_value([role])}")
            problems.append(Problem((repr(tag),), (line,)))
            continue
        spec: Any = role if style < 5 and unit is None else {"role": role, **({} if unit is None else {"unit": unit})}
        if style == 9:
            spec = {**spec, "colour": "red"} if isinstance(spec, dict) else spec
        lines.append(f"{toml_string(tag)} = {toml_value(spec)}")
        problem = entry_problem(tag, role, unit, isinstance(spec, dict) and "colour" in spec, line)
        if problem:
            problems.append(problem)
        elif isinstance(role, str):
            roles[tag] = role
            if role in owner:
                problems.append(Problem((repr(tag),), (line,)))  # a second tag for one role
            owner[role] = tag
    ignored = set(ignore) if isinstance(ignore, list) and all(isinstance(t, str) for t in ignore) else set()
    if ignored & set(roles):
        problems.append(Problem(tuple(repr(t) for t in ignored & set(roles))))
    return "\n".join(lines) + "\n", roles, ignored, problems


@settings(max_examples=300, deadline=None, suppress_health_check=FIXTURE_OK)
@given(doc=toml_maps())
@example(doc=('ignore = ["x"]\n[tags]\n"ignore" = "nope"\n', {}, {"x"}, [Problem(("'ignore'",), (3,))]))  # said line 1
def test_generated_toml_tag_maps_load_exactly_or_name_the_key(tmp_path: Path,
                                                             doc: tuple[str, dict[str, str], set[str], list[Problem]]) -> None:
    text, roles, ignored, problems = doc
    check_map(tmp_path / f"map-{next(_files)}.toml", text, roles, ignored, problems)


@st.composite
def csv_maps(draw: st.DrawFn) -> tuple[str, dict[str, str], set[str], list[Problem]]:
    header = draw(st.sampled_from(["tag,role", "tag,role,unit", "Tag , ROLE", "role,tag", "tag"]))
    width = len(header.split(","))
    good_header = [h.strip().lower() for h in header.split(",")] in (["tag", "role"], ["tag", "role", "unit"])
    problems = [] if good_header else [Problem(("header",), (1,))]
    rows = draw(st.lists(st.tuples(st.sampled_from([t for t in TAGS if t != "x" * 201] + ["", "x" * 201]),
                                   st.sampled_from(ROLE_TEXTS), st.sampled_from(["", "kW", " degC ", "F"]),
                                   st.integers(0, 9)), max_size=6))
    lines = [header]
    roles: dict[str, str] = {}
    ignored: set[str] = set()
    owner: dict[str, str] = {}
    for tag, role, unit, style in rows:
        line = len(lines) + 1
        cells = [tag, role, unit][:width]
        if style == 0:
            cells.append("extra")
        text = ",".join(f'"{c.replace(chr(34), chr(34) * 2)}"' if any(x in c for x in ',"\t ') else c for c in cells)
        lines.append(text)
        if style == 1:
            lines.append("")  # blank lines are skipped, but they count
        if not good_header:
            continue
        name = tag.strip()
        if style == 0:
            problems.append(Problem(("expected",), (line,)))
        elif not any(c.strip() for c in cells):
            continue
        elif name in roles or name in ignored:
            problems.append(Problem((repr(name),), (line,)))
        elif role.strip() == "ignore":
            ignored.add(name)
        elif (problem := entry_problem(name, role.strip(), unit if width == 3 else None, False, line)) is not None:
            problems.append(problem)
        else:
            roles[name] = role.strip()
            if role.strip() in owner:
                problems.append(Problem((repr(name),), (line,)))
            owner[role.strip()] = name
    if good_header and not roles and not problems:
        problems.append(Problem(("maps no tags",)))
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    return ("\ufeff" if draw(st.booleans()) else "") + eol.join(lines) + eol, roles, ignored, problems


@settings(max_examples=300, deadline=None, suppress_health_check=FIXTURE_OK)
@given(doc=csv_maps())
def test_generated_csv_tag_maps_load_exactly_or_name_the_line(tmp_path: Path,
                                                             doc: tuple[str, dict[str, str], set[str], list[Problem]]) -> None:
    text, roles, ignored, problems = doc
    check_map(tmp_path / f"map-{next(_files)}.csv", text, roles, ignored, problems)


@settings(max_examples=200, deadline=None, suppress_health_check=FIXTURE_OK)
@given(text=st.text(max_size=300) | st.lists(st.sampled_from(
    ["[tags]", "tag,role", "\n", "=", '"', ",", "it_power_kw", "ignore", "{", "}", "[", "]", " ", "\r", "<big>"]),
    max_size=30).map("".join), suffix=st.sampled_from([".toml", ".csv"]), raw=st.binary(max_size=50))
@example(text='tag,role\n"<big>,it_power_kw\n', suffix=".csv", raw=b"")  # was the csv module's own Error
def test_arbitrary_tag_map_files_load_or_raise_tag_map_error(tmp_path: Path, text: str, suffix: str, raw: bytes) -> None:
    text = text.replace("<big>", "x" * 140_000)  # over the csv module's field limit
    for path, content in ((tmp_path / f"any-{next(_files)}{suffix}", text.encode("utf-8")),
                          (tmp_path / f"raw-{next(_files)}{suffix}", raw)):
        path.write_bytes(content)
        try:
            tag_map = TagMap.load(path)
        except TagMapError as err:
            assert str(err).startswith(str(path)), str(err)
        else:
            assert len(tag_map) >= 1 and all(tag_map.role_for(t) in ROLES for t in tag_map)


@st.composite
def tag_names(draw: st.DrawFn) -> str:
    return draw(st.text(min_size=1, max_size=12) | st.sampled_from(["a\x00b", "x" * 201, "x" * 200, "tab\there",
                                                                     "Hallé ✓ 🌡", " padded ", "quo\"te"]))


def check_tag_round_trip(engine: sa.Engine, tmp_path: Path, tag: str) -> None:
    """A tag the map accepts is stored exactly, or ingest names the problem; never a database error."""
    try:
        tag_map = TagMap.from_mapping({tag: "chw_supply_c"}, source="fuzz map")
    except TagMapError as err:
        assert repr(tag) in str(err) or "empty tag" in str(err), str(err)
        return
    path = tmp_path / "tag.csv"
    out = io.StringIO()
    csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n").writerows(
        [["timestamp", "tag", "value"], [T0_TEXT, tag, "7.5"]])
    path.write_text(out.getvalue(), encoding="utf-8")
    site = f"tag-{next(_files)}"
    before = snapshot(engine)
    try:
        ingest_csv(engine, path, tag_map=tag_map, site=site)
    except DatabaseError as err:  # pragma: no cover - the failure this test exists to catch
        pytest.fail(f"tag {tag!r} accepted by the tag map but refused by the database: {err}")
    except IngestError as err:
        assert tag != tag.strip() or "\r" in tag or "\n" in tag, str(err)
        assert snapshot(engine) == before
        return
    assert stored(engine, site) == ({(tag, T0_S): 7.5}, {tag})


@settings(max_examples=150, deadline=None, suppress_health_check=FIXTURE_OK)
@given(tag=tag_names())
@example(tag="a\x00b")  # PostgreSQL refused it (NUL in text) after the map had accepted it
@example(tag="x" * 201)  # longer than points.tag VARCHAR(200)
def test_tag_names_round_trip_or_are_refused_by_the_tag_map_sqlite(
    sqlite_engine: sa.Engine, tmp_path: Path, tag: str
) -> None:
    check_tag_round_trip(sqlite_engine, tmp_path, tag)


@pytest.mark.postgres
@settings(max_examples=40, deadline=None, suppress_health_check=FIXTURE_OK)
@given(tag=tag_names())
@example(tag="a\x00b")  # PostgreSQL refused it (NUL in text) after the map had accepted it
@example(tag="x" * 201)  # longer than points.tag VARCHAR(200)
def test_tag_names_round_trip_or_are_refused_by_the_tag_map_postgres(
    pg_engine: sa.Engine, tmp_path: Path, tag: str
) -> None:
    check_tag_round_trip(pg_engine, tmp_path, tag)
