"""Hypothesis fuzzing of the controller config (issue #8): a valid `Config` or a clear `ConfigError`.

Documents are built from the shipped example config with 1-3 values mutated to wrong
types, out-of-range numbers, NaN/inf and unknown keys, plus arbitrary text. Each must
give a valid `Config` (which must then be able to drive a control cycle) or a
`ConfigError` naming the file and the field (and a line that holds it), never with
the database password in it. `ConfigHolder` keeps the last good config through any
bad reload, and takes a good one (restart-only settings excepted).
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any

from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from controller.config import RESTART_REQUIRED, Config, ConfigError, parse_config
from controller.cycle import decide
from controller.service.config_watch import ConfigHolder
from tests._ctl_support import NOW, START_SETPOINTS, window
from tests._fuzz_support import FIXTURE_OK, toml_value

EXAMPLE = Path(__file__).resolve().parent.parent / "deploy" / "config" / "coolpilot.example.toml"
SECRET = "S3cr3t-pw-9z"

BASE: dict[str, Any] = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
BASE["database"]["url"] = f"postgresql://coolpilot:{SECRET}@127.0.0.1:5432/coolpilot"
BASE["optimizer"].update(random_candidates=50, refine_candidates=20, grid_points_per_role=3)


def leaves(doc: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for key, value in doc.items():
        out += leaves(value, (*prefix, key)) if isinstance(value, dict) else [(*prefix, key)]
    return out


LEAVES = [*leaves(BASE), ("optimizer", "seed"), ("setpoints", "chw_supply_sp_c", "pin_c"),
          ("actuator", "mqtt", "username"), ("historian",)]
MUST_FAIL = "must fail"
#: a change in one section can make a cross-field rule of another section fail (controller.config)
CROSS_FIELD = {"setpoints": {"coupling", "mode"}, "historian": {"database"}, "database": {"historian"}}
WRONG = st.sampled_from([
    "abc", "", "{role}{site_id.x}", "* * * * * *", [1, 2], {"a": 1}, True, -1, 0, 2**62, -(2**62), 0.5, -0.5,
    1e300, -1e300, math.nan, math.inf, -math.inf, 24.0, 99.0, "manual", "external", "auto",
])


def must_fail(base: Any, new: Any) -> bool:
    """Mutations the field's type must refuse (TOML is typed: no bool for a number, no float for an int)."""
    if isinstance(new, list | dict):
        return True
    if isinstance(base, bool | str):
        return type(new) is not type(base)
    if isinstance(base, int):
        return not isinstance(new, int) or isinstance(new, bool)
    if isinstance(base, float):
        return isinstance(new, bool | str) or (isinstance(new, float) and not math.isfinite(new))
    return False


@st.composite
def config_docs(draw: st.DrawFn) -> tuple[dict[str, Any], list[tuple[tuple[str, ...], str]]]:
    """The example config with 1-3 mutations: (path, "must fail" | "may fail")."""
    doc = _deep_copy(BASE)
    mutations = []
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(LEAVES))
        what = draw(st.sampled_from(["set", "set", "set", "delete", "unknown"]))
        if what != "unknown":
            mutations = [m for m in mutations if m[0] != path]  # the last change of a key counts
        parent = doc
        for key in path[:-1]:
            parent = parent.setdefault(key, {}) if isinstance(parent.get(key, {}), dict) else {}
        if what == "delete":
            parent.pop(path[-1], None)
            mutations.append((path, "may fail"))
        elif what == "unknown":
            parent[path[-1] + "_typo"] = 1
            mutations.append(((*path[:-1], path[-1] + "_typo"), MUST_FAIL))
        else:
            new = draw(WRONG)
            mutations.append((path, MUST_FAIL if must_fail(original(path), new) else "may fail"))
            parent[path[-1]] = new
    return doc, mutations


def original(path: tuple[str, ...]) -> Any:
    """The example's value at ``path`` (its type is the field's type), None where the example has none."""
    value: Any = BASE
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _deep_copy(doc: Any) -> Any:
    return {k: _deep_copy(v) for k, v in doc.items()} if isinstance(doc, dict) else doc


def render_toml(doc: dict[str, Any]) -> str:
    """Top-level scalars first, then one [section] per nested table."""
    out = [f"{k} = {toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]

    def tables(prefix: list[str], table: dict[str, Any]) -> None:
        out.append(f"[{'.'.join(prefix)}]")
        out.extend(f"{k} = {toml_value(v)}" for k, v in table.items() if not isinstance(v, dict))
        for k, v in table.items():
            if isinstance(v, dict):
                tables([*prefix, k], v)

    for key, value in doc.items():
        if isinstance(value, dict):
            tables([key], value)
    return "\n".join(out) + "\n"


def check_config_error(err: ConfigError, path: str, text: str) -> None:
    """File first, a field named (unless the TOML itself is broken), its line right, no password."""
    message = str(err)
    assert err.path == path and message.startswith(path), message
    assert SECRET not in message, "the database password leaked into an error"
    if err.field is not None and err.line is not None:
        line = text.splitlines()[err.line - 1]
        assert any(part in line for part in err.field.split(".")), (message, line)


def changed(path: tuple[str, ...], value: Any, kind: str) -> tuple[dict[str, Any], list[tuple[tuple[str, ...], str]]]:
    """The example config with one value changed (the bugs the fuzzer found, kept as examples)."""
    doc = _deep_copy(BASE)
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return doc, [(path, kind)]


@settings(max_examples=300, deadline=None)
@given(doc=config_docs())
@example(doc=changed(("optimizer", "seed"), -1, "may fail"))  # accepted, then every cycle raised
@example(doc=changed(("actuator", "mqtt", "topic"), "{role}{site_id.x}", "may fail"))  # AttributeError
@example(doc=changed(("setpoints", "chw_supply_sp_c", "min_c"), True, MUST_FAIL))  # became 1.0 C
@example(doc=changed(("actuator", "mqtt", "qos"), True, MUST_FAIL))  # Literal[0, 1, 2] took it as 1
def test_mutated_configs_validate_or_name_the_field(doc: tuple[dict[str, Any], list[tuple[tuple[str, ...], str]]]) -> None:
    data, mutations = doc
    text = render_toml(data)
    try:
        config = parse_config(text, "site.toml")
    except ConfigError as err:
        event("rejected")
        check_config_error(err, "site.toml", text)
        assert err.field is not None, str(err)
        touched = {p[0] for p, _ in mutations}
        allowed = touched.union(*(CROSS_FIELD.get(t, set()) for t in touched))
        assert err.field.split(".")[0] in allowed, (str(err), mutations)
        return
    event("accepted")
    failing = [p for p, kind in mutations if kind == MUST_FAIL]
    assert not failing, f"accepted {failing}"
    envelope = config.envelope()
    d = decide(config, window(), NOW, None, START_SETPOINTS)  # any config that validates can run a cycle
    assert all(envelope.bounds(r).min_c - 1e-9 <= v <= envelope.bounds(r).max_c + 1e-9 for r, v in d.new.items())


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200) | st.lists(st.sampled_from(
    ["[setpoints.chw_supply_sp_c]", "[safety]", "mode = ", '"auto"', "min_c = ", "1e400", "nan", "\n", "[[x]]",
     "=", "[", "'", '"', "site_id = \"a\"", f'[database]\nurl = "postgresql://u:{SECRET}@h/db"\n', "x.y.z = 1"]),
    max_size=25).map("".join))
def test_arbitrary_text_is_a_config_or_a_config_error(text: str) -> None:
    try:
        config = parse_config(text, "any.toml")
    except ConfigError as err:
        check_config_error(err, "any.toml", text)
    else:
        assert isinstance(config, Config)


@settings(max_examples=150, deadline=None, suppress_health_check=FIXTURE_OK)
@given(doc=config_docs(), raw=st.booleans())
def test_config_holder_keeps_the_last_good_config(tmp_path: Path, doc: tuple[dict[str, Any], Any], raw: bool) -> None:
    path = tmp_path / "coolpilot.toml"
    good = render_toml(BASE)
    path.write_text(good, encoding="utf-8")
    path.chmod(0o600)
    holder = ConfigHolder(path)
    before = holder.config
    text = render_toml(doc[0])
    path.write_bytes(b"\xff\xfe mode = 1" if raw else text.encode("utf-8"))
    result = holder.reload()
    try:
        expected = parse_config(text, str(path)) if not raw else None
    except ConfigError:
        expected = None
    if expected is None:
        assert result is not None and not result.reload_ok and holder.config is before
        assert result.error is not None and str(path) in result.error and SECRET not in result.error
        return
    assert result is not None and result.reload_ok
    kept = {name for name in RESTART_REQUIRED if "." not in name}
    assert holder.config.model_dump(exclude=kept | {"cycle"}) == expected.model_dump(exclude=kept | {"cycle"})
    assert all(getattr(holder.config, name) == getattr(before, name) for name in kept)
    assert holder.config.cycle.interval_s == before.cycle.interval_s
    assert holder.config.cycle.fallback_preset == expected.cycle.fallback_preset
    assert set(result.restart_required) <= set(RESTART_REQUIRED)
