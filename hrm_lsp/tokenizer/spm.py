"""SentencePiece BPE tokenizer (seed 004) with the plan, FIM, EOT and diagnostics symbols.

Trained with ``character_coverage=1.0`` and ``byte_fallback`` so that every string round
trips, with whitespace kept exactly (identity normalization, no dummy prefix, no whitespace
collapsing) because Go's tabs and newlines carry meaning for gofmt. Ids: 0 pad, 1 unk, then
``symbols.SPECIALS`` in order from 2, then the 256 byte pieces, then learned merges.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Iterator

import numpy as np
import sentencepiece as spm

from hrm_lsp.tokenizer import symbols
from hrm_lsp.tokenizer.base import Tokenizer, TokenizerError

# SentencePiece's own whitespace marker: a literal one in the text would decode as a space,
# and special names in the text would be matched as specials; both are encoded through byte
# pieces instead so ``decode(encode(text)) == text`` holds for any text.
_WS = "\u2581"
_LITERAL = re.compile("|".join([re.escape(_WS)] + [re.escape(s) for s in sorted(symbols.SPECIALS, key=len, reverse=True)]))
MAX_SENTENCE_BYTES = 16384


class SpmTokenizer(Tokenizer):
    """A trained SentencePiece model, checked to carry our special symbols at fixed ids."""

    kind = "spm"

    def __init__(self, model_proto: bytes) -> None:
        self._proto = bytes(model_proto)
        sp = spm.SentencePieceProcessor()
        try:
            sp.LoadFromSerializedProto(self._proto)
        except Exception as e:  # sentencepiece raises RuntimeError/OSError variants
            raise TokenizerError(f"not a SentencePiece model: {e}") from None
        self._sp = sp
        if sp.id_to_piece(0) != symbols.PAD or not sp.is_control(0):
            raise TokenizerError("SentencePiece model must have <pad> at id 0 (train it with `hrm-lsp prepare`)")
        self._special_ids = {symbols.PAD: 0}
        for s in symbols.SPECIALS:
            i = sp.piece_to_id(s)
            if i == sp.unk_id() or sp.id_to_piece(i) != s:
                raise TokenizerError(f"SentencePiece model lacks the special symbol {s}")
            self._special_ids[s] = i
        self._byte_ids = [sp.piece_to_id(f"<0x{b:02X}>") for b in range(256)]
        if any(not sp.is_byte(i) for i in self._byte_ids):
            raise TokenizerError("SentencePiece model was trained without byte_fallback")

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        out: list[int] = []
        pos = 0
        for m in _LITERAL.finditer(text):
            if m.start() > pos:
                out.extend(self._sp.encode(text[pos:m.start()]))
            lit = m.group()
            head = lit if lit == _WS else lit[0]  # "<" of a special name, or the marker itself
            out.extend(self._byte_ids[b] for b in head.encode("utf-8"))
            if lit != _WS:
                out.extend(self._sp.encode(lit[1:]))
            pos = m.end()
        if pos < len(text):
            out.extend(self._sp.encode(text[pos:]))
        return out

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids if int(i) != 0]
        n = self.vocab_size
        bad = [i for i in ids if not 0 <= i < n]
        if bad:
            raise ValueError(f"id {bad[0]} is outside the vocabulary ({n})")
        return self._sp.decode(ids)

    def piece(self, i: int) -> str:
        """The vocabulary piece of an id (for inspection and GGUF export)."""
        return self._sp.id_to_piece(int(i))

    def features(self, ids: np.ndarray) -> dict[str, np.ndarray]:
        return {}

    def to_bytes(self) -> bytes:
        return self._proto


def sentences(texts: Iterable[str], max_bytes: int = 4000) -> Iterator[str]:
    """Cut texts into training 'sentences' at line ends, each at most ~max_bytes long.

    Newlines stay inside the sentences so that merges like "{\\n\\t" can be learned."""
    for text in texts:
        buf: list[str] = []
        n = 0
        for line in text.splitlines(keepends=True):
            if n and n + len(line) > max_bytes:
                yield "".join(buf)
                buf, n = [], 0
            buf.append(line[: MAX_SENTENCE_BYTES // 4])  # a single huge line is truncated for training only
            n += len(buf[-1])
        if buf:
            yield "".join(buf)


def train_spm(texts: Iterable[str], vocab_size: int, *, threads: int = 1,
              max_sentences: int = 2_000_000, seed_sentencepiece_size: int = 1_000_000,
              seed: int = 0) -> SpmTokenizer:
    """Train the BPE model on ``texts`` (the training split); raises TokenizerError on failure."""
    minimum = 2 + len(symbols.SPECIALS) + 256 + 1
    if vocab_size < minimum:
        raise TokenizerError(f"--vocab {vocab_size} is too small: need at least {minimum} "
                             f"(pad, unk, {len(symbols.SPECIALS)} specials, 256 byte pieces)")
    out = io.BytesIO()
    it = sentences(texts)
    spm.set_random_generator_seed(seed)  # sampling of large inputs is then reproducible
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=it,
            model_writer=out,
            model_type="bpe",
            vocab_size=vocab_size,
            character_coverage=1.0,
            user_defined_symbols=list(symbols.SPECIALS),
            pad_id=0, pad_piece=symbols.PAD,
            unk_id=1, bos_id=-1, eos_id=-1,
            byte_fallback=True,
            split_digits=True,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            add_dummy_prefix=False,
            allow_whitespace_only_pieces=True,
            max_sentence_length=MAX_SENTENCE_BYTES,
            input_sentence_size=max_sentences,
            shuffle_input_sentence=True,
            seed_sentencepiece_size=seed_sentencepiece_size,
            num_threads=max(1, threads),
            minloglevel=2,
        )
    except RuntimeError as e:
        msg = str(e)
        hint = ""
        need = re.search(r"smaller than required_chars\. (\d+) vs (\d+)", msg)
        most = re.search(r"too high \((\d+)\)\. Please set it to a value <= (\d+)", msg)
        if need:  # the text has more distinct characters than the vocabulary has room for
            hint = (f" (the training text has {need.group(2)} distinct characters and pieces that "
                    f"must each get an id; use a larger --vocab, at least {need.group(2)})")
        elif most:
            hint = (f" (the training text has too few distinct pieces for --vocab {most.group(1)}; "
                    f"use a smaller --vocab, at most {most.group(2)}, or more data)")
        elif "Vocabulary size" in msg or "vocab_size" in msg:
            hint = " (the vocabulary size does not suit this text; see the message for the bound)"
        raise TokenizerError(f"SentencePiece training failed: {msg.strip()}{hint}") from None
    return SpmTokenizer(out.getvalue())
