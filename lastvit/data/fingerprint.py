"""Content hashes of generated data, so that a change in the generator (or in a library it uses)
changes a recorded number instead of silently changing results.

:func:`scenes_fingerprint` hashes what a model sees and is scored against: every image's pixels,
label, box and mask (plus the object and background ids), split by split in a fixed order. Images
are hashed as decoded pixels, never as PNG bytes, so a different zlib gives the same hash.
"""

from __future__ import annotations

import hashlib
import io

import numpy as np

FINGERPRINT_COLUMNS = ("image", "label", "bbox", "mask", "object_id", "background_id", "text")
"""The columns a fingerprint covers, in the order each row is hashed (missing ones are skipped;
``text`` is the CLIP captions of the pretraining study)."""


def _pixels(value) -> np.ndarray:
    """A decoded image (PIL) or an undecoded one (``{"bytes": ...}``, a PNG) as a uint8 array."""
    if isinstance(value, dict):
        from PIL import Image

        with Image.open(io.BytesIO(value["bytes"])) as opened:
            return np.asarray(opened)
    return np.asarray(value)


def _update_array(digest, array: np.ndarray) -> None:
    array = np.ascontiguousarray(array)
    digest.update(f"{array.dtype.str}{array.shape}".encode())
    digest.update(array.tobytes())


def split_fingerprint(dataset) -> str:
    """sha256 (hex) of one ``datasets.Dataset`` of scenes: row by row, the columns of
    :data:`FINGERPRINT_COLUMNS` it has; pixels of ``image`` and ``mask`` as uint8 arrays, ``bbox``
    as float32, ``label`` as int64, ids as UTF-8."""
    columns = [c for c in FINGERPRINT_COLUMNS if c in dataset.column_names]
    raw = dataset
    for column in ("image", "mask"):
        if column in columns and hasattr(dataset.features[column], "decode"):
            raw = raw.cast_column(column, type(dataset.features[column])(decode=False))
    digest = hashlib.sha256(f"rows={len(raw)};columns={','.join(columns)}".encode())
    for row in raw.select_columns(columns):
        for column in columns:
            value = row[column]
            if column in ("image", "mask"):
                _update_array(digest, _pixels(value))
            elif column == "bbox":
                _update_array(digest, np.asarray(value, dtype="<f4"))
            elif column == "label":
                _update_array(digest, np.asarray(value, dtype="<i8"))
            else:
                digest.update(str(value).encode() + b"\0")
    return digest.hexdigest()


def scenes_fingerprint(dataset_dict) -> dict[str, str]:
    """``{split: sha256 hex}`` of a scenes ``DatasetDict`` (see :func:`split_fingerprint`), splits in
    sorted order; the study records it in ``report.json`` as ``data_fingerprint``."""
    return {split: split_fingerprint(dataset_dict[split]) for split in sorted(dataset_dict)}


def arrays_md5(images: np.ndarray) -> str:
    """md5 (hex) of a uint8 image stack's bytes: a quick pixel check, e.g. of the first N test scenes."""
    return hashlib.md5(np.ascontiguousarray(images, dtype=np.uint8).tobytes()).hexdigest()


__all__ = ["FINGERPRINT_COLUMNS", "arrays_md5", "scenes_fingerprint", "split_fingerprint"]
