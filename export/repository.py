"""Publishing to the model repository: ``models/<name>/<version>/``, written atomically.

A version is assembled in a hidden temporary folder next to the versions (``.tmp-…``, which
:func:`server.modelcard.version_dirs` skips) and appears only by one ``os.rename`` to the next
integer; a crash leaves at most a hidden temporary folder, never a half version.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from server.errors import ExportError, InvalidModelCard
from server.modelcard import (
    CARD_FILE,
    HOLDOUT_FILE,
    ONNX_FILE,
    ModelCard,
    encode_card,
    load_card,
    version_dirs,
)

CardForVersion = Callable[[int], ModelCard]
"""Makes the card for a given version number (the number is known only when publishing)."""


def model_versions(models_dir: Path, name: str) -> list[int]:
    """Published version numbers of ``name``, ascending."""
    return [int(p.name) for p in version_dirs(models_dir) if p.parent.name == name]


def latest_card(models_dir: Path, name: str) -> ModelCard | None:
    """The newest valid card of ``name``, or None. Invalid versions are skipped."""
    for version in reversed(model_versions(models_dir, name)):
        try:
            return load_card(models_dir / name / str(version), verify_sha256=False)
        except InvalidModelCard:
            continue
    return None


def list_versions(models_dir: Path) -> tuple[list[ModelCard], list[str]]:
    """Every version's card whose card and ONNX file check out, and the problems of the rest."""
    cards: list[ModelCard] = []
    problems: list[str] = []
    for version_dir in version_dirs(models_dir):
        try:
            cards.append(load_card(version_dir))
        except InvalidModelCard as exc:
            problems.append(exc.detail)
    return cards, problems


def valid_cards(models_dir: Path) -> list[ModelCard]:
    """Every version in the repository whose card and ONNX file check out."""
    return list_versions(models_dir)[0]


def _labels(y: NDArray[Any]) -> NDArray[Any]:
    """Class indices as int64; a regression target (floats) as float64."""
    y = np.asarray(y)
    return y.astype(np.float64) if y.dtype.kind == "f" else y.astype(np.int64)


def save_holdout(path: Path, X: NDArray[np.float32], y: NDArray[Any]) -> None:
    with path.open("wb") as fh:
        np.savez_compressed(fh, X=np.asarray(X, dtype=np.float32), y=_labels(y))


def load_holdout(version_dir: Path) -> tuple[NDArray[np.float32], NDArray[Any]]:
    """The labelled hold-out rows of a version: X float32 (the row matrix, in the card's column
    order), y int64 class indices (classifiers) or float64 targets (regression)."""
    with np.load(version_dir / HOLDOUT_FILE) as data:
        return np.asarray(data["X"], dtype=np.float32), _labels(data["y"])


def publish(
    models_dir: Path,
    name: str,
    card_for_version: CardForVersion,
    onnx_bytes: bytes,
    holdout: tuple[NDArray[np.float32], NDArray[Any]] | None = None,
    before_rename: Callable[[Path], None] | None = None,
    extra_files: Mapping[str, bytes] | None = None,
) -> Path:
    """Write a new version of ``name`` atomically and return its folder.

    ``extra_files`` (file name → bytes: the ladder's variant ONNX files) are written into the
    same temporary folder, so they appear with the version or not at all.

    ``before_rename(tmp_dir)`` runs when every file is written but before the version becomes
    visible; an exception there (or anywhere) removes the temporary folder and publishes nothing.
    """
    model_dir = models_dir / name
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=".tmp-", dir=model_dir))
    try:
        tmp_dir.chmod(0o755)  # mkdtemp makes it private; the server may run as another user
        (tmp_dir / ONNX_FILE).write_bytes(onnx_bytes)
        if holdout is not None:
            save_holdout(tmp_dir / HOLDOUT_FILE, *holdout)
        for file_name, data in (extra_files or {}).items():
            reserved = file_name in (ONNX_FILE, HOLDOUT_FILE, CARD_FILE)
            if reserved or Path(file_name).name != file_name:
                raise ExportError(f"{name}: {file_name!r} is not a file name of its own")
            (tmp_dir / file_name).write_bytes(data)
        for _ in range(100):
            version = max(model_versions(models_dir, name), default=0) + 1
            (tmp_dir / CARD_FILE).write_bytes(encode_card(card_for_version(version)))
            _fsync_dir_files(tmp_dir)
            if before_rename is not None:
                before_rename(tmp_dir)
            target = model_dir / str(version)
            try:
                if target.exists():  # another publisher took this number meanwhile
                    continue
                os.rename(tmp_dir, target)
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    continue
                raise
            load_card(target)  # the published version must read back as valid
            return target
        raise ExportError(f"{name}: could not claim a new version number in {model_dir}")
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir, ignore_errors=True)


def _fsync_dir_files(folder: Path) -> None:
    for path in folder.iterdir():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
