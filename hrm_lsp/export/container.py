"""The GGUF container: write and read named tensors + metadata with a checksum.

This layer knows nothing about models; ``hrm_lsp.export.gguf`` maps a model's weights onto
it. GGUF (version 3) is the standard container of the llama.cpp ecosystem; we use the
``gguf`` package to write it and its reader to parse it, and add what a product needs on
top: an architecture check, our own format version, and a SHA-256 over every tensor and
metadata value, so that a flipped bit anywhere is reported instead of silently producing
different completions.

Everything the reader can trip over (short files, foreign magic, bad offsets) is turned
into ``ModelFileError`` naming the file and the problem.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hrm_lsp.export.errors import ModelFileError

GGUF_MAGIC = b"GGUF"
GGUF_VERSION = 3
NS = "hrm_lsp"  # our metadata namespace (architecture-independent keys)
FORMAT_VERSION = 1  # bump when the tensor layout or required keys change
KEY_FORMAT = f"{NS}.format_version"
KEY_CHECKSUM = f"{NS}.checksum.sha256"
KEY_UINT8 = f"{NS}.uint8_tensors"  # JSON list: I8 tensors that hold raw bytes (packed nibbles)


def _meta_lines(meta: Mapping[str, Any]) -> bytes:
    # Canonical form of the metadata for the checksum: every key but the checksum, sorted,
    # JSON values (the writer adds only general.architecture, which is passed in here).
    items = sorted((k, v) for k, v in meta.items() if k != KEY_CHECKSUM)
    return "\n".join(f"{k}={json.dumps(v, sort_keys=True)}" for k, v in items).encode()


def checksum(meta: Mapping[str, Any], tensors: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over the metadata (minus the checksum key) and every tensor's name, dtype,
    shape and bytes, in name order. Independent of file offsets and padding."""
    h = hashlib.sha256()
    h.update(_meta_lines(meta))
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name])
        if arr.dtype == np.int8:  # uint8 tensors are stored as int8; hash the same bytes
            arr = arr.view(np.uint8)
        h.update(f"\n{name}|{arr.dtype.str}|{tuple(arr.shape)}\n".encode())
        h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


def write_container(path: str | Path, arch: str, meta: Mapping[str, Any],
                    tensors: Mapping[str, np.ndarray],
                    ggml_types: Mapping[str, int] | None = None) -> str:
    """Write a GGUF file atomically (temp file + rename); return its checksum.

    ``meta`` values: str, bool, int, float. Tensors: float32, float16, int8, int32, uint8
    (uint8 is stored as GGUF I8 and read back as uint8). A name in ``ggml_types`` is a
    uint8 array of GGML blocks ``[rows, row_bytes]`` stored with that GGML type (Q4_0, Q4_1)
    and read back as the same uint8 array.
    """
    ggml_types = dict(ggml_types or {})
    from gguf import GGUFWriter

    path = Path(path)
    if path.parent and not path.parent.exists():
        raise ModelFileError(f"{path}: directory {path.parent} does not exist")
    uint8_names = sorted(n for n, a in tensors.items() if a.dtype == np.uint8 and n not in ggml_types)
    full_meta = dict(meta)
    full_meta[KEY_FORMAT] = FORMAT_VERSION
    full_meta[KEY_UINT8] = json.dumps(uint8_names)
    stored: dict[str, np.ndarray] = {}
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        if name in ggml_types:
            if arr.dtype != np.uint8 or arr.ndim != 2:
                raise ValueError(f"tensor {name}: GGML blocks must be a 2-D uint8 array")
        elif arr.dtype == np.uint8:
            arr = arr.view(np.int8)
        elif arr.dtype not in (np.float32, np.float16, np.int8, np.int32):
            raise ValueError(f"tensor {name}: dtype {arr.dtype} cannot be stored")
        stored[name] = arr
    digest = checksum({**full_meta, "general.architecture": arch}, stored)
    full_meta[KEY_CHECKSUM] = digest

    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent or ".")
    os.close(fd)
    try:
        w = GGUFWriter(tmp, arch)
        for key, value in full_meta.items():
            if isinstance(value, bool):
                w.add_bool(key, value)
            elif isinstance(value, int):
                w.add_uint64(key, value) if value >= 0 else w.add_int64(key, value)
            elif isinstance(value, float):
                w.add_float64(key, value)
            elif isinstance(value, str):
                w.add_string(key, value)
            else:
                raise ValueError(f"metadata {key}: unsupported type {type(value).__name__}")
        for name in sorted(stored):
            if name in ggml_types:
                from gguf import GGMLQuantizationType

                w.add_tensor(name, stored[name], raw_dtype=GGMLQuantizationType(ggml_types[name]))
            else:
                w.add_tensor(name, stored[name])
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return digest


_PLAIN_TYPES = (0, 1, 24, 25, 26, 27, 28)  # F32 F16 I8 I16 I32 I64 F64; others are GGML blocks


def _field_value(field: Any) -> Any:
    from gguf import GGUFValueType

    t = field.types[0] if field.types else None
    if t == GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]]).decode("utf-8")
    if t == GGUFValueType.ARRAY:
        return [field.contents(i) for i in range(len(field.data))]
    value = field.parts[field.data[0]][0]
    if t == GGUFValueType.BOOL:
        return bool(value)
    if t in (GGUFValueType.FLOAT32, GGUFValueType.FLOAT64):
        return float(value)
    return int(value)


def peek_header(path: Path) -> tuple[int, int, int]:
    """(version, n_tensors, n_kv) from the fixed 24-byte GGUF header, or ModelFileError."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except IsADirectoryError:
        raise ModelFileError(f"{path}: is a directory, not a model file") from None
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such model file") from None
    except OSError as e:
        raise ModelFileError(f"{path}: cannot read ({e.strerror})") from None
    if len(head) < 4 or head[:4] != GGUF_MAGIC:
        what = "empty file" if not head else f"starts with {head[:4]!r}"
        raise ModelFileError(f"{path}: not a GGUF model file ({what}; expected magic b'GGUF')")
    if len(head) < 24:
        raise ModelFileError(f"{path}: truncated GGUF file ({len(head)} bytes; the header alone is 24)")
    version, n_tensors, n_kv = struct.unpack("<IQQ", head[4:24])
    if version != GGUF_VERSION:
        raise ModelFileError(f"{path}: GGUF version {version} is not supported (expected {GGUF_VERSION})")
    return version, n_tensors, n_kv


def read_container(path: str | Path, arches: tuple[str, ...], *, verify: bool = True
                   ) -> tuple[str, dict[str, Any], dict[str, np.ndarray]]:
    """Read and check a file written by ``write_container``.

    Returns ``(arch, meta, tensors)``; tensors are read-only memory maps (uint8 ones as
    uint8). Raises ModelFileError for a missing, truncated, corrupt or foreign file, an
    architecture not in ``arches``, a newer format version or a checksum mismatch.
    """
    path = Path(path)
    peek_header(path)
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path, "r")
        meta = {}
        for key, field in reader.fields.items():
            if key.startswith("GGUF."):
                continue
            meta[key] = _field_value(field)
        tensors: dict[str, np.ndarray] = {}
        end = reader.data_offset
        for t in reader.tensors:
            end = max(end, int(t.data_offset) + int(t.n_bytes))
            arr = np.asarray(t.data)
            if int(t.tensor_type) in _PLAIN_TYPES:
                expected = tuple(int(x) for x in reversed(t.shape.tolist()))
                if int(np.prod(expected)) != arr.size:
                    raise ModelFileError(f"{path}: tensor {t.name} data does not match its shape")
                arr = arr.reshape(expected)
            tensors[t.name] = arr
        size = path.stat().st_size
        padded = -(-end // reader.alignment) * reader.alignment
        if size < padded:
            raise ModelFileError(f"{path}: truncated GGUF file ({size} bytes; its header describes {padded})")
        if size > padded:
            raise ModelFileError(f"{path}: {size - padded} unexpected trailing bytes after the tensor data")
    except ModelFileError:
        raise
    except Exception as e:  # the reader's failures on damaged files are assorted
        size = path.stat().st_size
        raise ModelFileError(
            f"{path}: truncated or corrupt GGUF file ({size} bytes; reader said: {type(e).__name__}: {e})"
        ) from None

    arch = meta.get("general.architecture")
    if arch not in arches:
        raise ModelFileError(
            f"{path}: architecture {arch!r} is not an hrm-lsp model (expected one of {', '.join(arches)})")
    version = meta.get(KEY_FORMAT)
    if not isinstance(version, int):
        raise ModelFileError(f"{path}: missing {KEY_FORMAT}; not written by hrm-lsp export")
    if version > FORMAT_VERSION:
        raise ModelFileError(f"{path}: format version {version} is newer than this hrm-lsp "
                             f"understands ({FORMAT_VERSION}); upgrade hrm-lsp")
    try:
        uint8_names = set(json.loads(meta.get(KEY_UINT8, "[]")))
    except json.JSONDecodeError:
        raise ModelFileError(f"{path}: corrupt metadata {KEY_UINT8}") from None
    if verify:
        expected = meta.get(KEY_CHECKSUM)
        if not isinstance(expected, str):
            raise ModelFileError(f"{path}: no checksum in metadata ({KEY_CHECKSUM})")
        try:
            actual = checksum(meta, tensors)
        except (OSError, ValueError) as e:
            raise ModelFileError(f"{path}: truncated or corrupt tensor data ({e})") from None
        if actual != expected:
            raise ModelFileError(
                f"{path}: checksum mismatch (file says {expected[:12]}…, data gives {actual[:12]}…); "
                "the file is corrupt: export or download it again")
    for name in uint8_names:
        if name in tensors:
            tensors[name] = tensors[name].view(np.uint8)
    return arch, meta, tensors
