"""What every tokenizer offers (docs/architecture.md, "tokenizer"), and the one error family."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence

import numpy as np

from hrm_lsp.tokenizer import symbols


class TokenizerError(ValueError):
    """A tokenizer file or table is missing, corrupt or of an unknown kind."""


class Tokenizer(ABC):
    """Text <-> ids. ``pad_id`` is 0 in both modes; special symbols have fixed names."""

    kind: str

    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def eot_id(self) -> int:
        return self.id_of(symbols.EOT)

    # Each kind fills this in its constructor: special symbol name -> id (pad included).
    _special_ids: dict[str, int]

    def id_of(self, symbol: str) -> int:
        """Id of a special symbol; KeyError for anything else."""
        try:
            return self._special_ids[symbol]
        except KeyError:
            raise KeyError(f"{symbol!r} is not a special symbol") from None

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Plain text -> ids. Special-symbol names inside ``text`` are NOT turned into specials."""

    @abstractmethod
    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text; special symbols render as their names, pad as nothing."""

    @abstractmethod
    def features(self, ids: np.ndarray) -> dict[str, np.ndarray]:
        """Per-position extra inputs computed from ids alone (byte mode: nibble, acc)."""

    @abstractmethod
    def to_bytes(self) -> bytes:
        """The whole tokenizer as bytes (what ``from_bytes``/``load_tokenizer`` read back)."""

    @classmethod
    def from_bytes(cls, data: bytes) -> Tokenizer:
        """Rebuild a tokenizer of either kind from ``to_bytes()`` output."""
        from hrm_lsp.tokenizer import load_tokenizer

        return load_tokenizer(data)

    @property
    def sha256(self) -> str:
        """Identity of the tokenizer (hex digest of ``to_bytes()``)."""
        cached = getattr(self, "_sha256", None)
        if cached is None:
            cached = hashlib.sha256(self.to_bytes()).hexdigest()
            self._sha256 = cached
        return cached

    @property
    def special_ids(self) -> dict[str, int]:
        """Every special symbol (pad included) -> id."""
        out = {symbols.PAD: self.pad_id}
        out.update({s: self.id_of(s) for s in symbols.SPECIALS})
        return out

    def encode_parts(self, parts: Sequence[str | Special]) -> list[int]:
        """Encode a document given as plain-text pieces and ``Special`` markers."""
        out: list[int] = []
        for p in parts:
            if isinstance(p, Special):
                out.append(self.id_of(p.name))
            elif p:
                out.extend(self.encode(p))
        return out

    def __repr__(self) -> str:
        return f"<{type(self).__name__} kind={self.kind} vocab={self.vocab_size} sha256={self.sha256[:12]}>"


class Special(str):
    """A special symbol inside a document's parts (a str subclass so parts join into text)."""

    __slots__ = ()

    @property
    def name(self) -> str:
        return str(self)

    def __new__(cls, name: str) -> Special:
        if name != symbols.PAD and name not in symbols.SPECIALS:
            raise KeyError(f"{name!r} is not a special symbol (see hrm_lsp/tokenizer/symbols.py)")
        return super().__new__(cls, name)
