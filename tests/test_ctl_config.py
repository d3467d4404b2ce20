"""Controller config: the example file, defaults, and errors that name file, line and field."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from controller.config import (
    RESTART_REQUIRED,
    ConfigError,
    load_config,
    parse_config,
    restart_required_changes,
)
from controller.service.config_watch import ConfigHolder

EXAMPLE = Path(__file__).resolve().parents[1] / "deploy" / "config" / "coolpilot.example.toml"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


def test_example_config_is_valid_and_builds_the_envelope(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path / "c.toml", EXAMPLE.read_text()))
    env = cfg.envelope()
    assert env.bounds("chw_supply_sp_c").max_c == cfg.setpoints["chw_supply_sp_c"].max_c
    assert env.min_coil_approach_k == cfg.coupling.min_coil_approach_k
    assert cfg.safety.rack_inlet_limit_c == 27.0
    assert cfg.pins() == {}


def test_partial_setpoint_section_keeps_the_other_defaults() -> None:
    cfg = parse_config("[setpoints.chw_supply_sp_c]\nmax_c = 12.0\n")
    assert cfg.setpoints["chw_supply_sp_c"].max_c == 12.0
    assert cfg.setpoints["chw_supply_sp_c"].min_c == parse_config("").setpoints["chw_supply_sp_c"].min_c


@pytest.mark.parametrize(
    ("text", "line", "field", "needle"),
    [
        ('mode = "auto"\n[safety]\nrack_inlet_limt_c = 27\n', 3, "safety.rack_inlet_limt_c", "unknown setting"),
        ('mode = "turbo"\n', 1, "mode", "auto"),
        ("[safety]\n\nk_sigma = -1\n", 3, "safety.k_sigma", "greater than or equal"),
        ("[setpoints.chw_supply_sp_c]\nmin_c = 7\nmax_c = 12\npin_c = 14\n", 1, "setpoints.chw_supply_sp_c", "pin_c 14"),
        ("[setpoints.chw_supply_sp_c]\nmin_c = 20\n", 1, "setpoints.chw_supply_sp_c", "exceeds max_c"),
        ("[setpoints.supply_air_sp_c]\nmax_c = 19\n[coupling]\nmin_coil_approach_k = 13\n", 4,
         "coupling.min_coil_approach_k", "no setpoints satisfy"),
        ('mode = "manual"\n', 1, "mode", "pin_c"),
        ("[safety]\nrack_inlet_limit_c = nan\n", 2, "safety.rack_inlet_limit_c", "finite"),
        ("[actuator.mqtt]\ntopic = \"plant/#\"\n", 2, "actuator.mqtt.topic", "{role}"),
        ('[retraining]\ncron = "61 * * * *"\n', 2, "retraining.cron", "crontab"),
        ("[setpoints.hot_water_sp_c]\nmin_c = 1\n", 1, "setpoints.hot_water_sp_c", "unknown setpoint role"),
        ("[safety\nk_sigma = 1\n", 1, None, "not valid TOML"),
    ],
)
def test_invalid_config_names_line_and_field(tmp_path: Path, text: str, line: int, field: str | None,
                                             needle: str) -> None:
    path = write(tmp_path / "bad.toml", text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    err = info.value
    assert err.line == line
    assert err.field == field
    assert needle in str(err)
    assert str(err).startswith(f"{path}:{line}: ")


def test_group_writable_file_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", 'mode = "auto"\n')
    path.chmod(0o664)
    with pytest.raises(ConfigError, match="writable by group or other"):
        load_config(path)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.toml")


def test_restart_required_changes_lists_only_restart_settings() -> None:
    old = parse_config("")
    new = parse_config('mode = "auto"\n[metrics]\nport = 9200\n[cycle]\ninterval_s = 600\n')
    assert restart_required_changes(old, new) == ("cycle.interval_s", "metrics")
    assert set(restart_required_changes(old, new)) <= set(RESTART_REQUIRED)


def test_holder_reloads_valid_rejects_invalid_and_keeps_last_good(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", 'mode = "advisory"\n')
    holder = ConfigHolder(path)
    assert holder.config.mode == "advisory"
    assert holder.poll() is None  # unchanged file: nothing to do

    write(path, 'mode = "auto"\n[safety]\nk_sigma = 3.0\n')
    result = holder.poll()
    assert result is not None and result.reload_ok and result.changed
    assert holder.config.mode == "auto" and holder.config.safety.k_sigma == 3.0

    write(path, 'mode = "auto"\n[safety]\nk_sigma = "lots"\n')
    result = holder.poll()
    assert result is not None and not result.reload_ok
    assert "safety.k_sigma" in (result.error or "") and "c.toml:3" in (result.error or "")
    assert not holder.reload_ok
    assert holder.config.safety.k_sigma == 3.0  # last good config stays in force
    assert holder.poll() is None  # the same bad file is not re-parsed every poll


def test_holder_keeps_restart_settings_until_restart(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", 'site_id = "a"\n[metrics]\nport = 9109\n')
    holder = ConfigHolder(path)
    write(path, 'site_id = "b"\nmode = "rules"\n[metrics]\nport = 9300\n[cycle]\ninterval_s = 600\n')
    result = holder.reload()
    assert result.reload_ok
    assert result.restart_required == ("site_id", "cycle.interval_s", "metrics")
    assert "need a restart" in result.message()
    cfg = holder.config
    assert (cfg.site_id, cfg.metrics.port, cfg.cycle.interval_s) == ("a", 9109, 300)
    assert cfg.mode == "rules"  # reloadable settings take effect


def test_invalid_file_at_startup_stops_startup(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", "[thresholds]\nmax_ood_score = 0\n")
    with pytest.raises(ConfigError, match=r"c.toml:2: thresholds.max_ood_score"):
        ConfigHolder(path)


def test_sighup_requests_a_reload(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", 'mode = "advisory"\n')
    holder = ConfigHolder(path)
    previous = signal.getsignal(signal.SIGHUP)
    try:
        holder.install_sighup()
        os.kill(os.getpid(), signal.SIGHUP)
        result = holder.poll()  # the file did not change, so only the signal triggers this reload
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert result is not None and result.reload_ok and not result.changed


def test_external_history_needs_a_historian_section() -> None:
    with pytest.raises(ConfigError, match=r"database.source: 'external' needs a \[historian\]"):
        parse_config('[database]\nsource = "external"\n')
    cfg = parse_config('[database]\nsource = "external"\n[historian]\ntable = "trend"\ntime_column = "t"\n'
                       'tag_column = "tag"\nvalue_column = "v"\n[historian.tags]\n"HALL.RACK.MAX" = "rack_inlet_max_c"\n')
    assert cfg.historian is not None
    assert cfg.historian.section() == {"table": "trend", "time_column": "t", "tag_column": "tag", "value_column": "v",
                                       "tags": {"HALL.RACK.MAX": "rack_inlet_max_c"}}
    with pytest.raises(ConfigError, match="unknown role"):
        parse_config('[database]\nsource = "external"\n[historian]\ntable = "trend"\ntime_column = "t"\n'
                     'tag_column = "tag"\nvalue_column = "v"\n[historian.tags]\nX = "rack_inlet"\n')
