"""Model artifacts on disk: safetensors weights plus a JSON sidecar, never pickle.

An artifact is a directory ``<models_dir>/<version>/`` holding ``model.safetensors``
and ``model.json``. It is written into a temporary directory next to its final place
and renamed into place with one `os.replace`, so a reader sees a whole artifact or
none. The sidecar records the sha256 of the weights; the database records it too, and
loading refuses weights whose hash differs (truncated, corrupt or tampered). The
registry also records the sidecar's own sha256 (its scalers and calibration shape every
prediction), and loading refuses a changed sidecar.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from forecasting.model import FORMAT, EnsembleForecaster

WEIGHTS_FILE = "model.safetensors"
SIDECAR_FILE = "model.json"


class ArtifactError(ValueError):
    """A model artifact that cannot be used; the message names the file and the reason."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_write(path: Path, data: bytes) -> None:
    with path.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def save_artifact(model: EnsembleForecaster, models_dir: Path) -> tuple[Path, str]:
    """Write the artifact atomically; returns (artifact directory, sha256 of the weights)."""
    models_dir.mkdir(parents=True, exist_ok=True)
    final = models_dir / model.version
    if final.exists():
        raise ArtifactError(f"model artifact {final}: already exists; versions are never overwritten")
    weights = st_save(model.tensors(), metadata={"format": FORMAT, "version": model.version})
    digest = sha256_bytes(weights)
    sidecar = {**model.sidecar(), "weights_file": WEIGHTS_FILE, "weights_sha256": digest}
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{model.version}-", dir=models_dir))
    try:
        _fsync_write(tmp / WEIGHTS_FILE, weights)
        _fsync_write(tmp / SIDECAR_FILE, (json.dumps(sidecar, indent=1, sort_keys=True) + "\n").encode())
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final, digest


def read_sidecar(artifact: Path, expected_sha256: str | None = None) -> dict[str, Any]:
    """The parsed JSON sidecar of an artifact directory, with a clear error if unusable.

    ``expected_sha256``: the sidecar's hash in the database record; the bytes hashed are
    the bytes parsed (read once).
    """
    path = artifact / SIDECAR_FILE
    raw, _ = _read_checked(path, expected_sha256)
    try:
        data = json.loads(raw.decode("utf-8"))
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"model artifact {path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except UnicodeDecodeError as exc:
        raise ArtifactError(f"model artifact {path}: cannot read ({exc})") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"model artifact {path}: expected a JSON object, got {type(data).__name__}")
    return data


def _read_checked(path: Path, expected_sha256: str | None) -> tuple[bytes, str]:
    """The file's bytes and sha256, refused when the hash differs from the database record."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"model artifact {path}: file not found") from None
    except OSError as exc:
        raise ArtifactError(f"model artifact {path}: cannot read ({exc})") from None
    digest = sha256_bytes(raw)
    if expected_sha256 is not None and digest != expected_sha256:
        raise ArtifactError(
            f"model artifact {path}: sha256 {digest[:12]}... differs from the database record "
            f"{expected_sha256[:12]}...; the file was changed or corrupted, refusing to load it"
        )
    return raw, digest


def load_artifact(artifact: Path, expected_sha256: str | None = None,
                  expected_sidecar_sha256: str | None = None) -> EnsembleForecaster:
    """Load and verify an artifact directory; nothing is unpickled.

    ``expected_sha256`` is the weights hash recorded in the database; the sidecar's own
    record is always checked as well. ``expected_sidecar_sha256``, when recorded, is the
    hash of the sidecar file itself.
    """
    sidecar = read_sidecar(artifact, expected_sidecar_sha256)
    weights_path = artifact / WEIGHTS_FILE
    data, digest = _read_checked(weights_path, expected_sha256)
    if digest != sidecar.get("weights_sha256"):
        raise ArtifactError(
            f"model artifact {weights_path}: sha256 {digest[:12]}... differs from {SIDECAR_FILE}'s "
            f"weights_sha256; the file is truncated, corrupt or from another model"
        )
    try:
        tensors: dict[str, np.ndarray[Any, Any]] = st_load(data)
    except (SafetensorError, ValueError) as exc:
        raise ArtifactError(f"model artifact {weights_path}: not a valid safetensors file ({exc})") from None
    try:
        return EnsembleForecaster.from_parts(tensors, sidecar)
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"model artifact {artifact}: weights and {SIDECAR_FILE} do not match: {exc}") from None
