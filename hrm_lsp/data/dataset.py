"""Reading prepared data: ``Dataset(DIR).batches(...)`` -> numpy int32 [B, seq_len + 1].

The stream of a split is, epoch after epoch, its documents in a seeded random order. Rows are
consecutive windows of ``seq_len + 1`` tokens of that endless stream, overlapping by one token
(inputs ``ids[:, :-1]``, targets ``ids[:, 1:]``).

Two FIM modes (docs/data.md, "Task-aligned FIM"):

- ``aligned`` (the default): documents enter the stream without their document-level plan
  (refinement documents stay whole). A row is cut to the window first; then, with
  probability ``fim_rate``, it becomes a fill-in-the-middle example of the code it covers
  (extended within its document to a full window), in the layout of
  ``hrm_lsp.tokenizer.layout``, mostly in SPM order. Middles are what the server asks for:
  the rest of a line, a whole statement, a block, a function body (tree-sitter) or a random
  character span; a plan only where a real one exists (the function's doc comment, or the
  commit message that names the changed function), never for single-line middles. A row
  that ends early continues with the plain stream after its document.
- ``document``: the earlier behaviour -- each whole document, plan first, turned into a FIM
  example at two random token cuts (docs/tokenizers.md, "FIM"). Global row ``r`` belongs to batch
``r // (B * world_size)`` and rank ``(r // B) % world_size``, so every rank sees different
rows and batch ``k`` is a pure function of (data, seed, options, k): resuming with
``start=b.position`` continues exactly, with no state beyond that integer.

Batches are numpy so the torch loop (``torch.from_numpy``) and the MLX loop (``mx.array``)
read the same thing; ``Dataset.tokenizer.features(b.ids)`` gives the byte-mode features.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hrm_lsp.tokenizer import Tokenizer, TokenizerError, load_tokenizer

SPLITS = ("train", "val", "test")
FIM_MODES = ("aligned", "document")
# Shares of the middle kinds in aligned FIM rows (docs/data.md): what the server requests
# (single-line completions, statements, blocks and bodies) and random spans (Bavarian et al.).
MIDDLE_KINDS: dict[str, float] = {"line_rest": 0.30, "statement": 0.25, "block": 0.10,
                                  "body": 0.20, "span": 0.15}
MIDDLE_SHARE = 0.5  # a middle takes at most this share of the window
PREFETCH = 4  # batches each worker process of ``batches(workers=N)`` builds ahead
WORKER_TIMEOUT_S = 600.0  # a batch a worker has not delivered by then is an error, not a hang


class DatasetError(ValueError):
    """A data directory is missing, incomplete, corrupt or does not match its tokenizer."""


@dataclass(frozen=True)
class Batch:
    """``ids``: int32 [B, seq_len + 1]; ``position``: pass as ``start`` to continue after it."""

    ids: np.ndarray
    index: int  # this batch's number (0-based) in the split's stream
    position: int  # index + 1

    @property
    def inputs(self) -> np.ndarray:
        """Model inputs, [B, seq_len]."""
        return self.ids[:, :-1]

    @property
    def targets(self) -> np.ndarray:
        """Next-token targets, [B, seq_len]."""
        return self.ids[:, 1:]


@dataclass
class _Epoch:
    order: np.ndarray  # document numbers in stream order
    fim: np.ndarray  # bool per stream position
    ends: np.ndarray  # cumulative token ends per stream position (after FIM)


class _Split:
    """One split: memory-mapped shards and the document table."""

    def __init__(self, root: Path, name: str, info: dict, dtype: np.dtype, tok: Tokenizer) -> None:
        self.name = name
        self.shards: list[np.ndarray] = []
        starts, lens, shard_of = [], [], []
        for k, sh in enumerate(info["shards"]):
            path, idx_path = root / sh["file"], root / sh["index"]
            if not path.is_file() or not idx_path.is_file():
                raise DatasetError(f"{root}: shard {sh['file']} of split {name!r} is missing")
            size = path.stat().st_size
            if size != sh["tokens"] * dtype.itemsize:
                raise DatasetError(f"{path}: {size} bytes, the manifest says {sh['tokens']} tokens "
                                   f"of {dtype} (truncated or rewritten; run prepare again)")
            self.shards.append(np.memmap(path, dtype=dtype, mode="r") if size else np.zeros(0, dtype))
            try:
                idx = np.load(idx_path, allow_pickle=False)
            except (ValueError, OSError) as e:
                raise DatasetError(f"{idx_path}: unreadable document index ({e})") from None
            if idx.ndim != 2 or idx.shape != (sh["documents"], 2):
                raise DatasetError(f"{idx_path}: document index does not match the manifest")
            starts.append(idx[:, 0])
            lens.append(idx[:, 1])
            shard_of.append(np.full(len(idx), k, dtype=np.int32))
        self.starts = np.concatenate(starts) if starts else np.zeros(0, np.int64)
        self.lens = np.concatenate(lens) if lens else np.zeros(0, np.int64)
        self.shard_of = np.concatenate(shard_of) if shard_of else np.zeros(0, np.int32)
        self.tokens = int(self.lens.sum())
        self._tok = tok
        self._plan_end: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.lens)

    def doc(self, i: int) -> np.ndarray:
        s = int(self.starts[i])
        return np.asarray(self.shards[int(self.shard_of[i])][s:s + int(self.lens[i])], dtype=np.int32)

    def plan_end(self) -> np.ndarray:
        """Per document: index of ``</PLAN>`` if the document can be a FIM example, else -1.

        FIM needs a plan, at least two code tokens and no refinement section."""
        if self._plan_end is None:
            t = self._tok
            close, validate, eot = t.id_of("</PLAN>"), t.id_of("<VALIDATE>"), t.eot_id
            out = np.full(len(self), -1, dtype=np.int64)
            for d in range(len(self)):
                ids = self.doc(d)
                hit = np.flatnonzero(ids[:4096] == close)
                if (len(hit) and hit[0] < len(ids) - 3 and ids[-1] == eot
                        and not (ids == validate).any()):
                    out[d] = hit[0]
            self._plan_end = out
        return self._plan_end

    def body_start(self) -> np.ndarray:
        """Per document: where its code starts (after ``</PLAN>``) when it is a FIM candidate,
        else 0 (refinement documents keep their plan: the refinement loop sends one)."""
        return np.where(self.plan_end() >= 0, self.plan_end() + 1, 0)


class Dataset:
    """A prepared data directory (``hrm-lsp prepare``), validated on open."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        mpath = self.root / "manifest.json"
        if not mpath.is_file():
            hint = " (preparation did not finish; run the same prepare command again to resume)" \
                if (self.root / "work").is_dir() else ""
            raise DatasetError(f"{self.root}: no manifest.json{hint}")
        try:
            m = json.loads(mpath.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DatasetError(f"{mpath}: unreadable manifest ({e})") from None
        if not isinstance(m, dict) or m.get("format") != "hrm-lsp-data":
            raise DatasetError(f"{mpath}: not an hrm-lsp data manifest")
        if m.get("version") != 1:
            raise DatasetError(f"{mpath}: data format version {m.get('version')} is not supported")
        self.manifest = m
        tinfo = m["tokenizer"]
        try:
            self.tokenizer: Tokenizer = load_tokenizer(self.root / tinfo["file"])
        except TokenizerError as e:
            raise DatasetError(str(e)) from None
        if self.tokenizer.sha256 != tinfo["sha256"]:
            raise DatasetError(f"{self.root / tinfo['file']}: tokenizer does not match the manifest "
                               "(sha256 differs); the shards were encoded with another tokenizer")
        self.dtype = np.dtype(m["dtype"])
        self._splits: dict[str, _Split] = {}
        self._epochs: dict[tuple, _Epoch] = {}
        self._epoch_starts: dict[tuple, list[int]] = {}

    def split(self, name: str) -> _Split:
        """The named split (loaded on first use)."""
        if name not in SPLITS:
            raise DatasetError(f"unknown split {name!r} (one of {', '.join(SPLITS)})")
        if name not in self._splits:
            self._splits[name] = _Split(self.root, name, self.manifest["splits"][name], self.dtype,
                                        self.tokenizer)
        return self._splits[name]

    def num_tokens(self, split: str) -> int:
        """Tokens stored for ``split`` (before FIM)."""
        return self.split(split).tokens

    def num_documents(self, split: str) -> int:
        """Documents stored for ``split``."""
        return len(self.split(split))

    def document(self, split: str, i: int) -> np.ndarray:
        """Ids of one document as stored (no FIM)."""
        return self.split(split).doc(i)

    # -- the stream ----------------------------------------------------------------------------

    def _epoch(self, sp: _Split, key: tuple, e: int) -> _Epoch:
        ck = (*key, e)
        ep = self._epochs.get(ck)
        if ep is None:
            seed, fim_rate = key[1], key[2]
            rng = np.random.default_rng([seed, e, 0x5EED])
            order = rng.permutation(len(sp))
            eligible = sp.plan_end()[order] >= 0
            if key[4] == "aligned":  # no per-document FIM; plans leave the stream
                fim = np.zeros(len(sp), dtype=bool)
                lens = sp.lens[order] - sp.body_start()[order]
            else:
                fim = eligible & (rng.random(len(sp)) < fim_rate)
                lens = sp.lens[order] + 3 * fim  # FIM adds three sentinels
            ep = _Epoch(order, fim, np.cumsum(lens))
            if len(self._epochs) > 4:
                self._epochs.clear()
            self._epochs[ck] = ep
        return ep

    def _epoch_start(self, sp: _Split, key: tuple, e: int) -> int:
        starts = self._epoch_starts.setdefault(key, [0])
        while len(starts) <= e:
            k = len(starts) - 1
            starts.append(starts[k] + int(self._epoch(sp, key, k).ends[-1]))
        return starts[e]

    def _fim(self, ids: np.ndarray, plan_end: int, rng: np.random.Generator, spm_rate: float) -> np.ndarray:
        t = self.tokenizer
        plan, code = ids[: plan_end + 1], ids[plan_end + 1: -1]
        a, b = np.sort(rng.integers(0, len(code) + 1, size=2))
        prefix, middle, suffix = code[:a], code[a:b], code[b:]
        fp, fs, fm = t.id_of("<FIM_PREFIX>"), t.id_of("<FIM_SUFFIX>"), t.id_of("<FIM_MIDDLE>")
        if rng.random() < spm_rate:  # SPM: suffix first, then prefix (continues into the middle)
            parts = [[fs], suffix, [fp], prefix, [fm], plan, middle, [t.eot_id]]
        else:  # PSM
            parts = [[fp], prefix, [fs], suffix, [fm], plan, middle, [t.eot_id]]
        return np.concatenate([np.asarray(p, dtype=np.int32) for p in parts])

    def _stream_doc(self, sp: _Split, key: tuple, e: int, j: int) -> np.ndarray:
        ep = self._epoch(sp, key, e)
        d = int(ep.order[j])
        ids = sp.doc(d)
        if key[4] == "aligned":
            return ids[int(sp.body_start()[d]):]
        if ep.fim[j]:
            rng = np.random.default_rng([key[1], e, d, 0xF1])
            ids = self._fim(ids, int(sp.plan_end()[d]), rng, key[3])
        return ids

    def _aligned_fim_row(self, sp: _Split, key: tuple, pos: int, n: int,
                         rng: np.random.Generator) -> np.ndarray | None:
        """The FIM example for the row at stream position ``pos`` (``n`` ids), or None when
        its document cannot be one (a refinement document, too little code)."""
        from hrm_lsp.data.middles import choose_middle
        from hrm_lsp.tokenizer.layout import comment_plan_ids, fim_example

        t = self.tokenizer
        e, j, doc_pos = self._locate(sp, key, pos)
        d = int(self._epoch(sp, key, e).order[j])
        plan_end = int(sp.plan_end()[d])
        if plan_end < 0:
            return None
        full = sp.doc(d)
        code = full[plan_end + 1:-1]  # between </PLAN> and <EOT>
        if len(code) < 8:
            return None
        # The window's code, extended within the document to a full window.
        end = min(len(code), pos - doc_pos + n)
        start = max(0, end - n)
        text = t.decode(code[start:end].tolist()).strip("\ufffd")  # byte mode: cut characters
        if start > 0:  # begin at a line start, as a file or an editor's window does
            k = text.find("\n")
            if 0 <= k < len(text) // 2:
                text = text[k + 1:]
        chars_per_token = max(1.0, len(text) / max(1, end - start))
        max_chars = int(n * MIDDLE_SHARE * chars_per_token)
        m = choose_middle(text, rng, max_chars, MIDDLE_KINDS)
        if m is None:
            return None
        plan = None
        if m.kind == "body" and m.multiline(text):
            stored = t.decode(full[:plan_end + 1].tolist())
            # A commit's plan (snapshot plans are always ADD) for the function it names;
            # else the function's own doc comment. The shards do not record which function
            # a commit changed, so a plan that does not name it is not used.
            if m.func_name and m.func_name in stored and ("<INTENT:FIX>" in stored
                                                         or "<INTENT:REFACTOR>" in stored):
                plan = full[:plan_end + 1].tolist()
            elif m.func_doc.strip():
                plan = comment_plan_ids(t, m.func_doc)
        p_ids = t.encode(text[:m.start])
        m_ids = t.encode(text[m.start:m.end])
        s_ids = t.encode(text[m.end:])
        room = n - (3 + len(plan or ()) + len(m_ids) + 1)
        if room < 8:
            return None
        # As inference cuts a prompt: the suffix keeps its start, the prefix its end.
        s_keep = min(len(s_ids), max(room // 4, room - len(p_ids)))
        p_keep = min(len(p_ids), room - s_keep)
        order = "spm" if rng.random() < key[3] else "psm"
        ids = fim_example(t, p_ids[len(p_ids) - p_keep:], m_ids, s_ids[:s_keep], plan, order)
        if len(ids) < n:  # continue with the plain stream after this document
            after = doc_pos + len(full) - (plan_end + 1)
            ids += self._tokens(sp, key, after, n - len(ids)).tolist()
        return np.asarray(ids[:n], dtype=np.int32)

    def _locate(self, sp: _Split, key: tuple, pos: int) -> tuple[int, int, int]:
        """(epoch, stream index j, stream position where document j starts) of ``pos``."""
        starts = self._epoch_starts.setdefault(key, [0])
        while starts[-1] <= pos:  # epoch lengths differ (FIM adds tokens), so extend lazily
            self._epoch_start(sp, key, len(starts))
        e = bisect.bisect_right(starts, pos) - 1
        base = self._epoch_start(sp, key, e)
        ep = self._epoch(sp, key, e)
        j = int(np.searchsorted(ep.ends, pos - base, side="right"))
        return e, j, base + (int(ep.ends[j - 1]) if j else 0)

    def _tokens(self, sp: _Split, key: tuple, begin: int, n: int) -> np.ndarray:
        """Tokens [begin, begin + n) of the endless stream."""
        out = np.empty(n, dtype=np.int32)
        filled = 0
        starts = self._epoch_starts.setdefault(key, [0])
        while starts[-1] <= begin:  # epoch lengths differ (FIM adds tokens), so extend lazily
            self._epoch_start(sp, key, len(starts))
        e = bisect.bisect_right(starts, begin) - 1
        pos = begin
        while filled < n:
            base = self._epoch_start(sp, key, e)
            ep = self._epoch(sp, key, e)
            j = int(np.searchsorted(ep.ends, pos - base, side="right"))
            while j < len(ep.order) and filled < n:
                doc_start = base + (int(ep.ends[j - 1]) if j else 0)
                ids = self._stream_doc(sp, key, e, j)
                take = ids[pos - doc_start: pos - doc_start + (n - filled)]
                out[filled: filled + len(take)] = take
                filled += len(take)
                pos += len(take)
                j += 1
            e += 1
        return out

    def batches(self, split: str = "train", batch_size: int = 8, seq_len: int = 512, seed: int = 0,
                fim_rate: float = 0.0, rank: int = 0, world_size: int = 1, start: int = 0,
                *, fim_spm_rate: float = 0.9, epochs: int | None = -1,
                fim_mode: str = "aligned", workers: int = 0) -> Iterator[Batch]:
        """Batches of ``split`` from batch number ``start`` on.

        ``fim_rate``: share of FIM rows (``aligned``) or documents (``document``);
        ``fim_spm_rate``: share of those in SPM order (what the server sends);
        ``fim_mode``: ``aligned`` or ``document`` (module docstring).
        ``epochs``: -1 (default) means endless for ``train`` and one pass for ``val``/``test``;
        None is endless; n stops after the batches that cover n epochs (the last one may wrap
        into the next epoch, so every document is seen).
        ``workers``: build batches in this many worker processes, a few batches ahead (0: in
        this process). A batch is a pure function of its number, so the batches are the same
        either way; one process builds about 0.5M tokens of FIM rows a second (tree-sitter,
        three encodes; docs/training.md), a fraction of what a GPU step takes."""
        if batch_size < 1 or seq_len < 1:
            raise DatasetError("batch_size and seq_len must be >= 1")
        if not 0 <= rank < world_size:
            raise DatasetError(f"rank {rank} is not in [0, world_size={world_size})")
        if not 0.0 <= fim_rate <= 1.0 or not 0.0 <= fim_spm_rate <= 1.0:
            raise DatasetError("fim_rate and fim_spm_rate must be in [0, 1]")
        if start < 0:
            raise DatasetError("start must be >= 0")
        if workers < 0:
            raise DatasetError("workers must be >= 0")
        if fim_mode not in FIM_MODES:
            raise DatasetError(f"fim_mode {fim_mode!r} is not one of {', '.join(FIM_MODES)}")
        sp = self.split(split)
        if sp.tokens == 0:
            raise DatasetError(f"split {split!r} of {self.root} is empty (see manifest.json; "
                               "--split-by auto holds out packages, files or documents of a single repository; "
                               "or add more code)")
        if epochs == -1:
            epochs = None if split == "train" else 1
        key = (split, int(seed), float(fim_rate), float(fim_spm_rate), fim_mode)
        rows_per_batch = batch_size * world_size
        limit = None
        if epochs is not None:
            total = self._epoch_start(sp, key, epochs)
            rows = -(-max(total - 1, 1) // seq_len)
            limit = -(-rows // rows_per_batch)
        shape = (split, key, batch_size, seq_len, rows_per_batch, rank)
        if workers:
            yield from self._parallel_batches(shape, start, limit, workers)
            return
        k = start
        while limit is None or k < limit:
            yield Batch(self._batch_ids(shape, k), k, k + 1)
            k += 1

    def _batch_ids(self, shape: tuple, k: int) -> np.ndarray:
        """The ids [batch_size, seq_len + 1] of batch ``k`` (``shape`` from ``batches``)."""
        split, key, batch_size, seq_len, rows_per_batch, rank = shape
        sp = self.split(split)
        seed, fim_rate, fim_mode = key[1], key[2], key[4]
        ids = np.empty((batch_size, seq_len + 1), dtype=np.int32)
        for i in range(batch_size):
            row = k * rows_per_batch + rank * batch_size + i
            fim_row = None
            if fim_mode == "aligned" and fim_rate > 0:
                rng = np.random.default_rng([int(seed), row, 0xF1A])
                if rng.random() < fim_rate:
                    fim_row = self._aligned_fim_row(sp, key, row * seq_len, seq_len + 1, rng)
            ids[i] = fim_row if fim_row is not None else \
                self._tokens(sp, key, row * seq_len, seq_len + 1)
        return ids

    def _parallel_batches(self, shape: tuple, start: int, limit: int | None,
                          workers: int) -> Iterator[Batch]:
        """``batches`` built by ``workers`` processes (spawned: nothing of this process, its
        threads or a GPU context is inherited), ``PREFETCH`` batches per worker ahead, in
        order. Closing the iterator stops them."""
        import multiprocessing
        from collections import deque

        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(workers, initializer=_worker_open, initargs=(str(self.root),)) as pool:
            pending: deque = deque()
            k = nxt = start
            while limit is None or k < limit:
                while len(pending) < PREFETCH * workers and (limit is None or nxt < limit):
                    pending.append(pool.apply_async(_worker_batch, (shape, nxt)))
                    nxt += 1
                try:
                    ids = pending.popleft().get(WORKER_TIMEOUT_S)
                except multiprocessing.TimeoutError:
                    raise DatasetError(f"batch {k}: no worker process delivered it in "
                                       f"{WORKER_TIMEOUT_S:.0f} s (one may have died; "
                                       "run with workers=0 to see why)") from None
                yield Batch(ids, k, k + 1)
                k += 1


_WORKER_DATASET: Dataset | None = None  # a worker process's own view of the data


def _worker_open(root: str) -> None:
    global _WORKER_DATASET
    _WORKER_DATASET = Dataset(root)


def _worker_batch(shape: tuple, k: int) -> np.ndarray:
    assert _WORKER_DATASET is not None
    return _WORKER_DATASET._batch_ids(shape, k)
