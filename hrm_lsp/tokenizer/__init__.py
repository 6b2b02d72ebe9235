"""hrm_lsp.tokenizer: SentencePiece and byte tokenizers (contract in docs/architecture.md).

``load_tokenizer(path_or_bytes)`` reads either kind: a SentencePiece ``.model`` (protobuf) or
the byte tokenizer's JSON table. Both are what ``Tokenizer.to_bytes()`` writes.
"""

from __future__ import annotations

from pathlib import Path

from hrm_lsp.tokenizer.base import Special, Tokenizer, TokenizerError

__all__ = ["Special", "Tokenizer", "TokenizerError", "load_tokenizer", "tokenizer_filename"]


def tokenizer_filename(kind: str) -> str:
    """File name of a tokenizer of ``kind`` inside a data or run directory."""
    return {"spm": "tokenizer.model", "byte": "tokenizer.json"}[kind]


def load_tokenizer(path_or_bytes: str | Path | bytes) -> Tokenizer:
    """Load a tokenizer from a file (or a directory holding one) or from ``to_bytes()`` output."""
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        data = bytes(path_or_bytes)
        where = "tokenizer bytes"
    else:
        p = Path(path_or_bytes)
        if p.is_dir():
            found = [p / tokenizer_filename(k) for k in ("spm", "byte") if (p / tokenizer_filename(k)).is_file()]
            if not found:
                raise TokenizerError(f"{p}: no tokenizer.model or tokenizer.json in this directory")
            p = found[0]
        try:
            data = p.read_bytes()
        except OSError as e:
            raise TokenizerError(f"{p}: cannot read tokenizer ({e.strerror or e})") from None
        where = str(p)
    if not data:
        raise TokenizerError(f"{where}: empty tokenizer")
    try:
        if data.lstrip()[:1] == b"{":
            from hrm_lsp.tokenizer.byte import ByteTokenizer

            return ByteTokenizer.parse(data)
        from hrm_lsp.tokenizer.spm import SpmTokenizer

        return SpmTokenizer(data)
    except TokenizerError as e:
        raise TokenizerError(f"{where}: {e}") from None
