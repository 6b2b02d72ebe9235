"""Core ML export (seed 000's Apple Neural Engine target): ``MODEL.mlpackage``, 4-bit weights.

What is converted: the model's full forward over a fixed window of ``seq_len`` token ids
(input ``ids`` int32 [1, seq_len]; outputs ``logits`` [1, seq_len, vocab] and
``refine_logit`` [1, seq_len]), as an ML program (fp16 compute, macOS 15 / iOS 18), with
weights quantized to 4 bits per block of 32 input values (``linear_symmetric`` int4,
``coremltools.optimize.coreml.linear_quantize_weights``). Callers right-pad the window; the
forward is causal, so logits at position t only depend on ids up to t. There is no KV cache
in the package: each call re-reads the window (what the ANE runs well).

Conversion runs anywhere coremltools installs (tested here on Linux); loading and predicting
need macOS (``coremltools`` ships the Core ML runtime only there). Byte-mode models take the
nibble and accumulator features as two more int32 inputs.

How: ``torch.export`` the forward, drop the no-op ``aten.alias`` nodes recent PyTorch emits
(coremltools' converter does not know them), then ``ct.convert``.
"""

from __future__ import annotations

import base64
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

from hrm_lsp.export.errors import ModelFileError
from hrm_lsp.log import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class CoreMLInfo:
    path: Path
    seq_len: int
    package_bytes: int
    compression: str


def _import_coremltools():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import coremltools as ct
    except ImportError:
        raise ModelFileError("Core ML export needs coremltools: pip install 'hrm-lsp[coreml]'") from None
    return ct


def _forward_module(model):
    import torch

    byte = model.cfg.byte_features

    class Forward(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, ids, nibble=None, acc=None):
            out = self.m(ids.long(), nibble=nibble, acc=acc) if byte else self.m(ids.long())
            return out.logits, out.refine_logit

    return Forward(model).eval()


def _strip_alias(ep) -> None:
    # aten.alias is an identity; coremltools 9 cannot convert it, so splice it out.
    g = ep.graph
    for node in list(g.nodes):
        if node.op == "call_function" and "alias" in str(node.target):
            node.replace_all_uses_with(node.args[0])
            g.erase_node(node)
    ep.graph_module.recompile()


def convert_model(model, seq_len: int = 256, quantize: bool = True):
    """The 4-bit Core ML ML program of ``model``'s forward over ``seq_len`` ids."""
    import numpy as np
    import torch

    ct = _import_coremltools()
    cfg = model.cfg
    if not 1 <= seq_len <= cfg.max_seq_len:
        raise ValueError(f"seq_len must be in 1..{cfg.max_seq_len} (the model's context)")
    fwd = _forward_module(model)
    example = [torch.ones(1, seq_len, dtype=torch.int32)]
    inputs = [ct.TensorType(name="ids", shape=(1, seq_len), dtype=np.int32)]
    if cfg.byte_features:
        example += [torch.zeros(1, seq_len, dtype=torch.int32)] * 2
        inputs += [ct.TensorType(name="nibble", shape=(1, seq_len), dtype=np.int32),
                   ct.TensorType(name="acc", shape=(1, seq_len), dtype=np.int32)]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.export's deprecation notices are not ours
        ep = torch.export.export(fwd, tuple(example)).run_decompositions({})
    _strip_alias(ep)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ml = ct.convert(ep, inputs=inputs,
                        outputs=[ct.TensorType(name="logits"), ct.TensorType(name="refine_logit")],
                        convert_to="mlprogram", minimum_deployment_target=ct.target.macOS15)
        if quantize:
            from coremltools.optimize.coreml import (
                OpLinearQuantizerConfig,
                OptimizationConfig,
                linear_quantize_weights,
            )

            qcfg = OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int4",
                                           granularity="per_block", block_size=32)
            ml = linear_quantize_weights(ml, OptimizationConfig(global_config=qcfg))
    ml.short_description = (f"hrm-lsp {cfg.arch} model: logits and refinement logit for "
                            f"{seq_len} token ids (4-bit weights)")
    return ml


def export_coreml(source, out: str | Path, *, seq_len: int = 256, quantize: bool = True) -> CoreMLInfo:
    """Export a run directory, checkpoint or GGUF file to ``out`` (.mlpackage)."""
    from hrm_lsp.export.gguf import load_model

    out = Path(out)
    if out.suffix != ".mlpackage":
        raise ModelFileError(f"{out}: a Core ML package must end in .mlpackage")
    model, tok, _ = load_model(source)
    ml = convert_model(model, seq_len=seq_len, quantize=quantize)
    ml.user_defined_metadata["hrm_lsp.tokenizer.kind"] = tok.kind
    ml.user_defined_metadata["hrm_lsp.tokenizer.sha256"] = tok.sha256
    ml.user_defined_metadata["hrm_lsp.tokenizer.data"] = base64.b64encode(tok.to_bytes()).decode("ascii")
    ml.user_defined_metadata["hrm_lsp.model.config"] = json.dumps(model.cfg.to_dict(), sort_keys=True)
    ml.save(str(out))
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return CoreMLInfo(out, seq_len, size, "int4 per-block(32)" if quantize else "none")
