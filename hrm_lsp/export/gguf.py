"""Trained runs <-> one GGUF model file (architecture ``hrgc`` or ``hrgc-gpt``).

Layout (docs/export.md has the full table):

- metadata: ``general.architecture``, ``hrm_lsp.model.config`` (the ModelConfig as JSON),
  the tokenizer (``hrm_lsp.tokenizer.kind``, ``.sha256`` and ``.data`` = base64 of
  ``Tokenizer.to_bytes()``), ``hrm_lsp.quant`` (group, symmetric, quantized tensor shapes),
  ``hrm_lsp.float_type``, ``hrm_lsp.source`` and the checksum (``hrm_lsp.checksum.sha256``);
- tensors, by the model's contract weight names: every block linear (``*.qkv``, ``*.proj``,
  ``*.gate_up``, ``*.down`` weights) as 4-bit blocks from ``hrm_lsp.model.quant.pack_4bit``
  -- with group 32 these are exactly GGML ``Q4_0`` (symmetric) / ``Q4_1`` (scale + min) and
  are typed so in the file; with group 64 they are stored as raw bytes (I8) in the same block
  layout. Embeddings and the output head in ``float_type`` (f16 by default, chosen by
  measurement, docs/export.md); norms, the refinement head and the initial states in f32.

``load_model(path)`` reads a GGUF file, a run directory or a checkpoint and returns
``(model, tokenizer, metadata)``; anything unusable raises ``ModelFileError``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hrm_lsp.export.container import NS, read_container, write_container
from hrm_lsp.export.errors import ModelFileError
from hrm_lsp.log import get_logger

log = get_logger(__name__)

ARCH_NAMES = {"hrgc": "hrgc", "gpt": "hrgc-gpt"}
ARCHES = tuple(ARCH_NAMES.values())
KEY_CONFIG = f"{NS}.model.config"
KEY_TOK_KIND = f"{NS}.tokenizer.kind"
KEY_TOK_SHA = f"{NS}.tokenizer.sha256"
KEY_TOK_DATA = f"{NS}.tokenizer.data"  # base64: one string parses fast; a u8 array does not
KEY_QUANT = f"{NS}.quant"
KEY_FLOAT = f"{NS}.float_type"
KEY_SOURCE = f"{NS}.source"
# The sequence length the model was trained on (the run's data.seq_len), when known: the
# engine keeps prompt and completion inside it (docs/inference.md, "Context window").
KEY_TRAIN_CONTEXT = f"{NS}.train_context"
FLOAT_TYPES = ("f32", "f16", "q8_0")
GGML_Q4_0, GGML_Q4_1, GGML_Q8_0 = 2, 3, 8


@dataclass(frozen=True)
class ExportInfo:
    """What ``export_gguf`` wrote."""

    path: Path
    arch: str
    n_params: int
    n_quantized: int
    file_bytes: int
    checksum: str
    source: str


# ---------------------------------------------------------------------------------------
# Sources: run directories, checkpoints, safetensors files


def resolve_weights(source: str | Path) -> tuple[Path, Path | None]:
    """(model.safetensors, directory to look for the tokenizer in) for a run directory, a
    checkpoint directory or a weights file."""
    from hrm_lsp.training.checkpoint import MODEL_FILE, latest_checkpoint

    p = Path(source)
    if not p.exists():
        raise ModelFileError(f"{p}: no such run directory, checkpoint or weights file")
    if p.is_file():
        return p, p.parent
    if (p / MODEL_FILE).is_file():  # a checkpoint directory: tokenizer lives in the run dir
        run = p.parent.parent if p.parent.name == "checkpoints" else p
        return p / MODEL_FILE, run
    ck = latest_checkpoint(p)
    if ck is None:
        raise ModelFileError(f"{p}: not a run directory (no complete checkpoint under "
                             f"{p / 'checkpoints'}; train first with `hrm-lsp train`)")
    return ck.path / MODEL_FILE, p


def _load_source(source: str | Path, tokenizer=None):
    from hrm_lsp.model import build_model
    from hrm_lsp.model.weights import (
        WeightsError,
        config_from_metadata,
        load_weights,
        read_safetensors,
    )
    from hrm_lsp.tokenizer import TokenizerError, load_tokenizer

    weights, tok_dir = resolve_weights(source)
    try:
        tensors, meta = read_safetensors(weights)
        if CONFIG_KEY_SAFETENSORS in meta:
            cfg = config_from_metadata(meta, str(weights))
        else:
            cfg = _run_config(tok_dir, weights)
        model = build_model(cfg, init=False)  # load_weights requires every weight
        load_weights(model, tensors)
    except WeightsError as e:
        raise ModelFileError(str(e)) from None
    if tokenizer is None:
        try:
            tokenizer = load_tokenizer(tok_dir)
        except TokenizerError as e:
            raise ModelFileError(f"{source}: no usable tokenizer next to the weights ({e}); "
                                 "pass one explicitly") from None
    if tokenizer.vocab_size != model.cfg.vocab_size:
        raise ModelFileError(f"{source}: tokenizer has {tokenizer.vocab_size} ids but the model "
                             f"was built for {model.cfg.vocab_size}")
    return model.eval(), tokenizer, weights


CONFIG_KEY_SAFETENSORS = "hrm_lsp.model"  # hrm_lsp.model.weights.CONFIG_KEY


def train_context_of(source: str | Path) -> int:
    """The sequence length a run's recipe trained on (``data.seq_len`` in its
    ``config.json``), or 0 where the source has no readable run config."""
    try:
        weights, run_dir = resolve_weights(source)
        data = json.loads(((run_dir or weights.parent) / "config.json").read_text(encoding="utf-8"))
        n = int(data["recipe"]["data"]["seq_len"])
    except (ModelFileError, OSError, ValueError, KeyError, TypeError):
        return 0
    return n if n > 0 else 0


def _run_config(run_dir: Path | None, weights: Path):
    """The model config from a run directory's ``config.json`` (key ``model_config``)."""
    from hrm_lsp.config import ConfigError
    from hrm_lsp.model.config import ModelConfig

    path = (run_dir or weights.parent) / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return ModelConfig.from_dict(data["model_config"])
    except FileNotFoundError:
        raise ModelFileError(f"{weights}: no model config in its metadata and no {path}") from None
    except (json.JSONDecodeError, KeyError, TypeError, ConfigError) as e:
        raise ModelFileError(f"{path}: no usable model_config ({e})") from None


# ---------------------------------------------------------------------------------------
# Which tensors are 4-bit


def quantized_names(model) -> list[str]:
    """Contract names of the block linears (the weights QAT trains for 4 bits)."""
    from hrm_lsp.model.hrgc import Linear

    return sorted(f"{name}.weight" for name, m in model.named_modules() if isinstance(m, Linear))


def quant_scheme(cfg) -> tuple[int, bool]:
    """(group, symmetric) of the 4-bit blocks a model is exported (and run) with."""
    # A QAT-trained model is packed with the arithmetic it trained with, so the file
    # reproduces its forward exactly; otherwise group 32 symmetric (GGML Q4_0).
    if cfg.qat_bits == 4:
        return cfg.qat_group, cfg.qat_symmetric
    return 32, True


# ---------------------------------------------------------------------------------------
# Export


def model_to_gguf(model, tokenizer, out: str | Path, *, float_type: str = "f16",
                  quantize: bool = True, source: str = "", train_context: int = 0) -> ExportInfo:
    """Write ``model`` + ``tokenizer`` to one GGUF file (see the module docstring);
    ``train_context``: the sequence length it was trained on (0: not known, not written)."""
    from hrm_lsp.model.quant import pack_4bit
    from hrm_lsp.model.weights import state_dict_for_export

    if float_type not in FLOAT_TYPES:
        raise ValueError(f"float_type must be one of {FLOAT_TYPES}, got {float_type!r}")
    cfg = model.cfg
    arch = ARCH_NAMES[cfg.arch]
    group, symmetric = quant_scheme(cfg)
    qnames = set(quantized_names(model)) if quantize else set()
    sd = state_dict_for_export(model)
    tensors: dict[str, np.ndarray] = {}
    ggml_types: dict[str, int] = {}
    qshapes: dict[str, list[int]] = {}
    q8shapes: dict[str, list[int]] = {}
    for name, t in sd.items():
        arr = t.detach().float().cpu().numpy()
        if name in qnames:
            packed = pack_4bit(t.detach().float().cpu(), group, symmetric)
            tensors[name] = packed.blocks.reshape(packed.shape[0], -1)
            qshapes[name] = list(packed.shape)
            if group == 32:
                ggml_types[name] = GGML_Q4_0 if symmetric else GGML_Q4_1
        elif arr.ndim == 2 and float_type == "f16" and _is_float_matrix(name):
            tensors[name] = arr.astype(np.float16)
        elif (arr.ndim == 2 and float_type == "q8_0" and _is_float_matrix(name)
              and arr.shape[1] % 32 == 0):
            from gguf import GGMLQuantizationType
            from gguf.quants import quantize as ggml_quantize

            tensors[name] = ggml_quantize(arr, GGMLQuantizationType.Q8_0)
            ggml_types[name] = GGML_Q8_0
            q8shapes[name] = list(arr.shape)
        else:
            tensors[name] = arr.astype(np.float32)
    tok_bytes = tokenizer.to_bytes()
    meta: dict[str, Any] = {
        "general.name": f"{arch}-{cfg.d_model}x{cfg.H_layers}+{cfg.L_layers}",
        KEY_CONFIG: json.dumps(cfg.to_dict(), sort_keys=True),
        KEY_TOK_KIND: tokenizer.kind,
        KEY_TOK_SHA: hashlib.sha256(tok_bytes).hexdigest(),
        KEY_TOK_DATA: base64.b64encode(tok_bytes).decode("ascii"),
        KEY_QUANT: json.dumps({"bits": 4, "group": group, "symmetric": symmetric,
                               "tensors": qshapes, "q8_0": q8shapes}, sort_keys=True),
        KEY_FLOAT: float_type,
        KEY_SOURCE: json.dumps({"source": source, "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                               time.gmtime())}),
        f"{arch}.context_length": cfg.max_seq_len,
        f"{arch}.embedding_length": cfg.d_model,
        f"{arch}.vocab_size": cfg.vocab_size,
    }
    if train_context:
        meta[KEY_TRAIN_CONTEXT] = int(train_context)
    out = Path(out)
    digest = write_container(out, arch, meta, tensors, ggml_types)
    return ExportInfo(out, arch, model.num_params(), len(qshapes), out.stat().st_size, digest, source)


def _is_float_matrix(name: str) -> bool:
    # Embeddings and the output head take the chosen float type; everything else small stays f32.
    return name.startswith(("embed.", "lm_head.", "nibble_embed.", "acc_embed."))


def export_gguf(source: str | Path, out: str | Path, *, float_type: str = "f16",
                quantize: bool = True, tokenizer=None) -> ExportInfo:
    """Export a run directory, checkpoint or weights file to GGUF."""
    model, tok, weights = _load_source(source, tokenizer)
    return model_to_gguf(model, tok, out, float_type=float_type, quantize=quantize,
                         source=str(weights), train_context=train_context_of(source))


# ---------------------------------------------------------------------------------------
# Load


@dataclass(frozen=True)
class ModelMetadata:
    """What a loaded model file said about itself."""

    path: Path
    format: str  # gguf | safetensors
    arch: str
    checksum: str
    quant: Mapping[str, Any]
    float_type: str
    source: str
    train_context: int = 0  # sequence length it was trained on; 0: not recorded


def load_model(path: str | Path, device: str = "cpu"):
    """``(model, tokenizer, metadata)`` from a GGUF file, run directory or checkpoint.

    GGUF 4-bit weights are dequantized once, at load. Raises ModelFileError naming the file
    and the problem for anything unusable.
    """
    p = Path(path)
    if not p.exists():
        raise ModelFileError(f"{p}: no such model file (expected a .gguf file, a run directory "
                             "or a checkpoint)")
    if p.is_file() and p.suffix != ".safetensors":
        model, tok, meta = _load_gguf(p)
    else:
        model, tok, weights = _load_source(p)
        meta = ModelMetadata(weights, "safetensors", ARCH_NAMES[model.cfg.arch], "", {}, "f32",
                             str(weights), train_context_of(p))
    bake_qat(model)
    return model.to(device).eval(), tok, meta


def read_tokenizer(path: str | Path):
    """The tokenizer embedded in a GGUF model file (checked like ``load_model`` does)."""
    from hrm_lsp.tokenizer import TokenizerError, load_tokenizer

    path = Path(path)
    _arch, meta, _tensors = read_container(path, ARCHES)
    if not isinstance(meta.get(KEY_TOK_DATA), str):
        raise ModelFileError(f"{path}: metadata key {KEY_TOK_DATA} is missing")
    try:
        return load_tokenizer(base64.b64decode(meta[KEY_TOK_DATA], validate=True))
    except (TokenizerError, ValueError) as e:
        raise ModelFileError(f"{path}: embedded tokenizer is unusable: {e}") from None


def bake_qat(model) -> None:
    """Replace fake quantization by its result, once: a QAT model's block linears then run
    plain matmuls on the 4-bit values instead of re-quantizing on every forward."""
    import torch

    from hrm_lsp.model.hrgc import Linear
    from hrm_lsp.model.quant import quantize_dequantize

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, Linear) and m.qat_bits == 4:
                m.weight.copy_(quantize_dequantize(m.weight, m.qat_group, m.qat_symmetric))
                m.qat_bits = 0


def _load_gguf(path: Path):
    import torch

    from hrm_lsp.config import ConfigError
    from hrm_lsp.model import build_model
    from hrm_lsp.model.config import ModelConfig
    from hrm_lsp.model.quant import Packed4, QuantError, block_bytes, unpack_4bit
    from hrm_lsp.model.weights import state_dict_for_export
    from hrm_lsp.tokenizer import TokenizerError, load_tokenizer

    arch, meta, tensors = read_container(path, ARCHES)
    for key in (KEY_CONFIG, KEY_TOK_DATA, KEY_QUANT):
        if not isinstance(meta.get(key), str):
            raise ModelFileError(f"{path}: metadata key {key} is missing")
    try:
        cfg = ModelConfig.from_dict(json.loads(meta[KEY_CONFIG]))
        quant = json.loads(meta[KEY_QUANT])
    except (json.JSONDecodeError, ConfigError) as e:
        raise ModelFileError(f"{path}: bad model config in metadata: {e}") from None
    if ARCH_NAMES[cfg.arch] != arch:
        raise ModelFileError(f"{path}: architecture {arch!r} disagrees with its config ({cfg.arch})")
    try:
        tok = load_tokenizer(base64.b64decode(meta[KEY_TOK_DATA], validate=True))
    except (TokenizerError, ValueError) as e:
        raise ModelFileError(f"{path}: embedded tokenizer is unusable: {e}") from None
    if tok.vocab_size != cfg.vocab_size:
        raise ModelFileError(f"{path}: embedded tokenizer has {tok.vocab_size} ids, the model {cfg.vocab_size}")

    model = build_model(cfg, init=False)  # every weight is read from the file below
    expected = state_dict_for_export(model)
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise ModelFileError(f"{path}: tensors do not match the {arch} config"
                             + (f"; missing {', '.join(missing[:5])}" if missing else "")
                             + (f"; unexpected {', '.join(extra[:5])}" if extra else ""))
    group, symmetric = int(quant.get("group", 32)), bool(quant.get("symmetric", True))
    qshapes = quant.get("tensors", {})
    q8shapes = quant.get("q8_0", {})
    state: dict[str, torch.Tensor] = {}
    for name, ref in expected.items():
        arr = tensors[name]
        want = tuple(ref.shape)
        if name in qshapes:
            if tuple(qshapes[name]) != want:
                raise ModelFileError(f"{path}: {name} has shape {tuple(qshapes[name])}, "
                                     f"the config needs {want}")
            nblk = want[1] // group
            bpb = block_bytes(group, symmetric)
            if arr.dtype != np.uint8 or arr.size != want[0] * nblk * bpb:
                raise ModelFileError(f"{path}: {name}: 4-bit data has {arr.size} bytes, "
                                     f"expected {want[0] * nblk * bpb}")
            try:
                w = unpack_4bit(Packed4(np.ascontiguousarray(arr).reshape(want[0], nblk, bpb),
                                        want, group, symmetric))
            except QuantError as e:
                raise ModelFileError(f"{path}: {name}: {e}") from None
        elif name in q8shapes:
            from gguf import GGMLQuantizationType
            from gguf.quants import dequantize as ggml_dequantize

            row_bytes = want[1] // 32 * 34
            if tuple(q8shapes[name]) != want or arr.dtype != np.uint8 or arr.size != want[0] * row_bytes:
                raise ModelFileError(f"{path}: {name}: 8-bit data does not match shape {want}")
            w = ggml_dequantize(np.asarray(arr).reshape(want[0], row_bytes),
                                GGMLQuantizationType.Q8_0).reshape(want)
        else:
            if tuple(arr.shape) != want:
                raise ModelFileError(f"{path}: {name} has shape {tuple(arr.shape)}, the config needs {want}")
            w = np.asarray(arr, dtype=np.float32)
        state[name] = torch.from_numpy(np.array(w, dtype=np.float32))
    own = dict(model.named_parameters())
    own.update(dict(model.named_buffers()))
    with torch.no_grad():
        for name, t in state.items():
            own[name].copy_(t)
    # The 4-bit weights were just dequantized: they are their own 4-bit round trip, so the
    # linears need no fake quantization (bake_qat would re-quantize them to the same values).
    from hrm_lsp.model.hrgc import Linear

    for name, m in model.named_modules():
        if isinstance(m, Linear) and f"{name}.weight" in qshapes:
            m.qat_bits = 0
    ctx = meta.get(KEY_TRAIN_CONTEXT, 0)
    info = ModelMetadata(path, "gguf", arch, meta.get(f"{NS}.checksum.sha256", ""), quant,
                         meta.get(KEY_FLOAT, "f32"), meta.get(KEY_SOURCE, ""),
                         int(ctx) if isinstance(ctx, int) and ctx > 0 else 0)
    return model.eval(), tok, info
