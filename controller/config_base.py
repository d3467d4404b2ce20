"""The base of every config section: strict, frozen, no unknown keys (one definition for all sections)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictSettings(BaseModel):
    """A config section. Strict: TOML values are typed, so `max_c = true` must not become 1.0 C,
    nor `window_rows = 2.5` an int; unknown keys are errors (a typo never goes unnoticed)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)
