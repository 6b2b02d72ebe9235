"""Pull requests exported as JSON Lines (schema and example: docs/pr-jsonl.md, docs/pr-example.jsonl).

One object per line::

    {"repo": "owner/name", "number": 12, "title": "...", "body": "...",
     "files": [{"path": "a/b.go", "before": "...", "after": "..."},
               {"path": "c.go", "before": "...", "patch": "@@ -1,3 +1,4 @@ ..."},
               {"path": "d.go", "patch": "@@ ..."}]}

``after`` wins over ``patch``; ``before`` + ``patch`` is patched; a ``patch`` alone gives only
the post-image of its hunks (a fragment, not a whole file). A bad line is reported and skipped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

from hrm_lsp.data.sources import ChangeRecord, Skips, SourceError, _changed_lines, check_go_bytes

_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


class PatchError(ValueError):
    """A unified diff does not apply to the given text."""


def _hunks(patch: str) -> list[tuple[int, list[str]]]:
    out: list[tuple[int, list[str]]] = []
    for line in patch.splitlines(keepends=True):
        m = _HUNK.match(line)
        if m:
            out.append((int(m.group(1)), []))
        elif out and line[:1] in (" ", "+", "-"):
            out[-1][1].append(line)
        elif out and line.startswith("\\"):
            continue  # "\ No newline at end of file"
        elif out and line.strip() == "":
            out[-1][1].append(" " + line)  # a blank context line some exporters strip
    return out


def apply_patch(before: str, patch: str) -> str:
    """Apply a unified diff (hunks only, headers ignored) to ``before``; PatchError if it does not fit."""
    src = before.splitlines(keepends=True)
    hunks = _hunks(patch)
    if not hunks:
        raise PatchError("no hunks in patch")
    out: list[str] = []
    pos = 0
    for start, lines in hunks:
        at = max(start - 1, 0) if start else 0
        if at < pos:
            raise PatchError(f"hunk at line {start} overlaps the previous one")
        out.extend(src[pos:at])
        pos = at
        for line in lines:
            tag, body = line[0], line[1:]
            if tag in " -":
                if pos >= len(src) or src[pos].rstrip("\r\n") != body.rstrip("\r\n"):
                    raise PatchError(f"hunk at line {start} does not match the file")
                if tag == " ":
                    out.append(src[pos])
                pos += 1
            else:
                out.append(body if body.endswith("\n") else body + "\n")
    out.extend(src[pos:])
    return "".join(out)


def post_image(patch: str) -> str:
    """Context and added lines of every hunk, hunks separated by a blank line."""
    return "\n".join("".join(line[1:] for line in lines if line[0] in " +")
                     for _, lines in _hunks(patch))


def _str_or_none(obj: dict, key: str, lineno: int) -> str | None:
    v = obj.get(key)
    if v is not None and not isinstance(v, str):
        raise ValueError(f"line {lineno}: '{key}' must be a string or null")
    return v


def iter_pr_jsonl(path: Path, skips: Skips, max_bytes: int = 1_000_000
                  ) -> Iterator[tuple[ChangeRecord, int]]:
    """Stream (record, changed_lines) for each .go file of each PR in a JSONL export."""
    path = Path(path)
    try:
        fh = path.open("rb")
    except OSError as e:
        raise SourceError(f"{path}: cannot read PR export ({e.strerror or e})") from None
    with fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            where = f"{path.name}:{lineno}"
            try:
                obj = json.loads(raw)
                if not isinstance(obj, dict):
                    raise ValueError("a line must hold a JSON object")
                repo = obj.get("repo")
                files = obj.get("files")
                if not isinstance(repo, str) or not repo:
                    raise ValueError("'repo' (owner/name) is required")
                if not isinstance(files, list):
                    raise ValueError("'files' must be a list")
                title = _str_or_none(obj, "title", lineno) or ""
                body = _str_or_none(obj, "body", lineno) or ""
                number = obj.get("number", lineno)
            except (ValueError, UnicodeDecodeError) as e:
                skips.add("bad PR record", f"{where}: {e}")
                continue
            message = title + ("\n\n" + body if body else "")
            for k, f in enumerate(files):
                fwhere = f"{where} file {k}"
                try:
                    if not isinstance(f, dict) or not isinstance(f.get("path"), str):
                        raise ValueError("each file needs a 'path' string")
                    fpath = f["path"]
                    before = _str_or_none(f, "before", lineno)
                    after = _str_or_none(f, "after", lineno)
                    patch = _str_or_none(f, "patch", lineno)
                except ValueError as e:
                    skips.add("bad PR record", f"{fwhere}: {e}")
                    continue
                if not fpath.endswith(".go"):
                    continue
                fragment = False
                if after is None and patch is not None and before is not None:
                    try:
                        after = apply_patch(before, patch)
                    except PatchError as e:
                        skips.add("patch does not apply", f"{fwhere}: {e}")
                        continue
                elif after is None and patch is not None:
                    after, fragment = post_image(patch), True
                if after is None:
                    skips.add("file deleted", fwhere)
                    continue
                why = ""
                for label, text in (("", after), (" (before)", before or "")):
                    _, bad = check_go_bytes(text.encode("utf-8", "surrogatepass"), max_bytes) \
                        if text else (None, "")
                    if bad:
                        why = bad + label
                        break
                if why:
                    skips.add(why, fwhere)
                    continue
                rec = ChangeRecord(repo, f"pr#{number}", fpath, before or "", after, message, "pr",
                                   fragment)
                yield rec, _changed_lines(rec.before, rec.after)
