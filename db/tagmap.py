"""Tag maps: a site's historian tag names -> canonical roles (``db.roles``), with units.

A site describes its tags once, in TOML::

    ignore = ["AHU-1.FILTER_DP"]          # tags present in exports but not used

    [tags]
    "CHW-ST-01" = "chw_supply_c"
    "AHU-1.SAT" = { role = "supply_air_c", unit = "degC" }

or in CSV with a header ``tag,role[,unit]`` (role ``ignore`` skips a tag). A declared
unit must be the role's unit (aliases such as ``degC`` are accepted): CoolPilot never
converts units, so a Fahrenheit tag is an error here rather than a wrong number later.
Without a tag map, role names map to themselves (`TagMap.identity`).
"""

from __future__ import annotations

import csv
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from db.roles import ROLES

IGNORE = "ignore"
MAX_TAG_CHARS = 200  # points.tag is VARCHAR(200); PostgreSQL enforces it, SQLite would not

UNIT_ALIASES: dict[str, str] = {
    "c": "C", "degc": "C", "°c": "C", "deg c": "C", "celsius": "C", "degrees c": "C", "℃": "C",
    "kw": "kW", "kilowatt": "kW", "kilowatts": "kW",
    "%": "%", "pct": "%", "percent": "%", "%rh": "%", "rh%": "%",
    "count": "count",
    "fraction": "fraction", "frac": "fraction",
    # units CoolPilot recognises only to say clearly that they are the wrong ones
    "f": "F", "degf": "F", "°f": "F", "fahrenheit": "F", "k": "K", "kelvin": "K",
    "w": "W", "mw": "MW", "btu/h": "BTU/h", "ton": "ton", "tons": "ton", "rt": "ton",
}


class TagMapError(ValueError):
    """A tag map that cannot be used; the message names file, line and the problem."""


def normalise_unit(unit: str) -> str | None:
    """The canonical spelling of a unit (``degC`` -> ``C``), or None when unrecognised."""
    return UNIT_ALIASES.get(unit.strip().lower())


def check_unit(role_name: str, unit: str) -> str | None:
    """None when ``unit`` is the unit of ``role_name``, else a sentence saying what is wrong."""
    expected = ROLES[role_name].unit
    canonical = normalise_unit(unit)
    if canonical == expected:
        return None
    if canonical is None:
        return f"unit {unit!r} is not recognised; role {role_name} is in {expected!r}"
    return (
        f"unit {unit!r} does not match role {role_name}, which is in {expected!r} "
        "(CoolPilot never converts units: export the tag in the role's unit)"
    )


@dataclass(frozen=True)
class TagEntry:
    """One mapped tag: its role, the unit it declares (if any) and where it was defined."""

    role: str
    unit: str | None
    where: str


@dataclass(frozen=True)
class TagMap:
    """Tag name -> role. Lookups of unknown tags fail with the map's source named."""

    entries: Mapping[str, TagEntry]
    ignored: frozenset[str] = field(default_factory=frozenset)
    source: str = "identity map (tags are role names)"

    @classmethod
    def identity(cls) -> TagMap:
        """Every role name maps to itself: the default when no tag map is given."""
        return cls({name: TagEntry(name, None, "identity") for name in ROLES})

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, str], source: str = "mapping") -> TagMap:
        """A map from a plain {tag: role} dict (config sections, tests)."""
        entries: dict[str, TagEntry] = {}
        ignored: set[str] = set()
        for tag, role_name in mapping.items():
            where = f"{source}: tag {tag!r}"
            if role_name == IGNORE:
                ignored.add(tag)
            else:
                entries[tag] = _entry(tag, role_name, None, where)
        return _checked(cls(entries, frozenset(ignored), source))

    @classmethod
    def load(cls, path: str | Path) -> TagMap:
        """Load a ``.toml`` or ``.csv`` tag map; errors name the file and line."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8-sig")
        except OSError as err:
            raise TagMapError(f"{path}: cannot read tag map: {err.strerror or err}") from err
        except UnicodeDecodeError as err:
            raise TagMapError(f"{path}: tag map is not UTF-8 text") from err
        suffix = path.suffix.lower()
        if suffix == ".toml":
            return _checked(_load_toml(path, text))
        if suffix == ".csv":
            return _checked(_load_csv(path, text))
        raise TagMapError(f"{path}: tag map must be a .toml or .csv file")

    def role_for(self, tag: str) -> str | None:
        """The role of ``tag``; None for an ignored tag; `KeyError` naming the map otherwise."""
        entry = self.entries.get(tag)
        if entry is not None:
            return entry.role
        if tag in self.ignored:
            return None
        raise KeyError(f"unknown tag {tag!r}: not in {self.source}")

    def tags_for(self, role_name: str) -> list[str]:
        """All tags mapped to a role (normally one)."""
        return [tag for tag, entry in self.entries.items() if entry.role == role_name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)


def _entry(tag: str, role_name: str, unit: str | None, where: str) -> TagEntry:
    if not tag.strip():
        raise TagMapError(f"{where}: empty tag name")
    if len(tag) > MAX_TAG_CHARS or any(ord(ch) < 32 or ord(ch) == 127 for ch in tag):
        raise TagMapError(f"{where}: tag {tag!r} must be at most {MAX_TAG_CHARS} printable characters")
    if role_name not in ROLES:
        raise TagMapError(f"{where}: unknown role {role_name!r}; known roles: {', '.join(ROLES)}")
    if unit is not None and unit.strip():
        problem = check_unit(role_name, unit)
        if problem:
            raise TagMapError(f"{where}: tag {tag!r}: {problem}")
        return TagEntry(role_name, unit.strip(), where)
    return TagEntry(role_name, None, where)


def _checked(tag_map: TagMap) -> TagMap:
    """One tag per role: two sensors behind one role would be silently averaged."""
    seen: dict[str, str] = {}
    for tag, entry in tag_map.entries.items():
        if entry.role in seen:
            raise TagMapError(
                f"{entry.where}: tag {tag!r} maps to role {entry.role}, which tag {seen[entry.role]!r} "
                "already has; aggregate the sensors upstream or map one of them to 'ignore'"
            )
        seen[entry.role] = tag
    return tag_map


def _toml_line(text: str, key: str) -> int | None:
    """Best-effort line of a key of the [tags] table (tomllib keeps no positions)."""
    pattern = re.compile(r'^\s*(?:"' + re.escape(key) + r'"|\'' + re.escape(key) + r"'|" + re.escape(key) + r")\s*=")
    in_tags = False
    for number, line in enumerate(text.split("\n"), start=1):
        if line.lstrip().startswith("["):  # a table header: is it [tags]? (a key "ignore" is also a top-level key)
            in_tags = _TAGS_HEADER.match(line) is not None
        elif in_tags and pattern.match(line):
            return number
    return None


_TAGS_HEADER = re.compile(r"""^\s*\[\s*(?:tags|"tags"|'tags')\s*\]\s*(?:#.*)?$""")


def _load_toml(path: Path, text: str) -> TagMap:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise TagMapError(f"{path}: invalid TOML: {err}") from err
    unknown = set(data) - {"tags", IGNORE}
    if unknown:
        raise TagMapError(f"{path}: unknown key(s) {sorted(unknown)}; expected [tags] and optional ignore")
    tags = data.get("tags")
    if not isinstance(tags, dict) or not tags:
        raise TagMapError(f"{path}: missing [tags] table (tag = \"role\" lines)")
    entries: dict[str, TagEntry] = {}
    for tag, spec in tags.items():
        line = _toml_line(text, tag)
        where = f"{path}:{line}" if line else f"{path}: [tags] {tag!r}"
        if isinstance(spec, str):
            entries[tag] = _entry(tag, spec, None, where)
        elif isinstance(spec, dict) and isinstance(spec.get("role"), str):
            extra = set(spec) - {"role", "unit"}
            if extra:
                raise TagMapError(f"{where}: tag {tag!r}: unknown field(s) {sorted(extra)}; use role and unit")
            unit = spec.get("unit")
            if unit is not None and not isinstance(unit, str):
                raise TagMapError(f"{where}: tag {tag!r}: field 'unit' must be a string")
            entries[tag] = _entry(tag, spec["role"], unit, where)
        else:
            raise TagMapError(f"{where}: tag {tag!r}: expected \"role\" or {{ role = \"...\", unit = \"...\" }}")
    ignore = data.get(IGNORE, [])
    if not isinstance(ignore, list) or not all(isinstance(t, str) for t in ignore):
        raise TagMapError(f"{path}: 'ignore' must be a list of tag names")
    both = set(ignore) & set(entries)
    if both:
        raise TagMapError(f"{path}: tag(s) {sorted(both)} are both mapped and ignored")
    return TagMap(entries, frozenset(ignore), str(path))


def _load_csv(path: Path, text: str) -> TagMap:
    reader = csv.reader(text.splitlines())
    try:
        return _read_csv(path, reader)
    except csv.Error as err:  # e.g. a field over csv.field_size_limit() after an unclosed quote
        raise TagMapError(f"{path}:{max(reader.line_num, 1)}: cannot parse CSV: {err}") from None


def _read_csv(path: Path, reader: Any) -> TagMap:  # a csv.reader (its type is private)
    header = [h.strip().lower() for h in next(reader, [])]
    if header[:2] != ["tag", "role"] or len(header) > 3 or (len(header) == 3 and header[2] != "unit"):
        raise TagMapError(f"{path}:1: header must be 'tag,role' or 'tag,role,unit', got {','.join(header)!r}")
    entries: dict[str, TagEntry] = {}
    ignored: set[str] = set()
    for row in reader:
        line = reader.line_num
        if not row or not any(cell.strip() for cell in row):
            continue
        where = f"{path}:{line}"
        if len(row) != len(header):
            raise TagMapError(f"{where}: expected {len(header)} fields ({','.join(header)}), found {len(row)}")
        tag, role_name = row[0].strip(), row[1].strip()
        if tag in entries or tag in ignored:
            raise TagMapError(f"{where}: field 'tag': tag {tag!r} is listed twice")
        if role_name == IGNORE:
            ignored.add(tag)
            continue
        entries[tag] = _entry(tag, role_name, row[2] if len(row) == 3 else None, where)
    if not entries:
        raise TagMapError(f"{path}: tag map maps no tags")
    return TagMap(entries, frozenset(ignored), str(path))
