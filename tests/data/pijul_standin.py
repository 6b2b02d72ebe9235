"""A stand-in for the four `pijul` commands hrm_lsp.data.pijul runs, for machines without pijul.

It is NOT pijul: it keeps a repository as a JSON list of full snapshots in `.pijul/pristine/db`
and prints what pijul 1.0 prints for `log --hash-only --limit N`, `change HASH` (a TOML header,
`# Dependencies`, `# Hunks` with libpijul's hunk headers), `reset` (writes the tracked files,
leaves others) and `unrecord HASH` (the channel only; only the newest change, as pijul refuses
to unrecord a change others depend on). It lets the
history walk (temporary copy, state reading, stopping rules) be tested here; the real binary is
tested by test_real_pijul_history when pijul is on PATH.

Usage: `python pijul_standin.py COMMAND ...` (the tests put a `pijul` launcher on PATH), and
`make_repo(path, changes)` to write a repository.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

DB = Path(".pijul") / "pristine" / "db"


def make_repo(path: Path, changes: list[dict]) -> Path:
    """A repository whose changes (oldest first) are dicts: hash, message, timestamp, files
    (the full {path: text} state after the change), optional description and moves {old: new}.
    The working copy holds the newest state."""
    (path / DB).parent.mkdir(parents=True, exist_ok=True)
    (path / ".pijul" / "changes").mkdir(exist_ok=True)
    (path / DB).write_text(json.dumps(changes))
    _write_working_copy(path, changes)
    return path


def _root() -> Path:
    d = Path.cwd()
    for p in (d, *d.parents):
        if (p / DB).is_file():
            return p
    sys.exit("Error: No Pijul repository found")


def _write_working_copy(root: Path, changes: list[dict]) -> None:
    # Like pijul's output: tracked files are written, files it does not track are left alone.
    for name, text in (changes[-1]["files"] if changes else {}).items():
        f = root / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)


def _q(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)  # pijul's escapes are a subset of JSON's


def _change_text(changes: list[dict], i: int) -> str:
    c = changes[i]
    prev = changes[i - 1]["files"] if i > 0 else {}
    now = c["files"]
    moves = c.get("moves", {})
    out = [f"message = {_q(c['message'])}"]
    if c.get("description"):
        out.append(f"description = {_q(c['description'])}")
    out += [f"timestamp = {_q(c['timestamp'])}", "", "[[authors]]", "name = 'T'", ""]
    if i > 0:
        out += ["# Dependencies", f"[2] {changes[i - 1]['hash']} # {changes[i - 1]['message']}", ""]
    out += ["# Hunks", ""]
    hunks: list[list[str]] = []
    if c.get("root"):
        hunks.append(["Root add", "  up 1.0, new 0:0"])
    new_dirs = sorted({"/".join(p.split("/")[:k]) for p in now for k in range(1, p.count("/") + 1)}
                      - {"/".join(p.split("/")[:k]) for p in prev for k in range(1, p.count("/") + 1)})
    for d in new_dirs:
        parent, _, base = d.rpartition("/")
        hunks.append([f"File addition: {_q(base)} in {_q(parent)} +dx \"UTF-8\"", "  up 1.0, new 0:1"])
    for new in moves.values():
        hunks.append([f"Moved: {_q(new)} {_q(new.rpartition('/')[2])}  2.9",
                      "B:BD 2.8 -> 2.9:9/2", "up 2.1, down 2.9"])
    for p in sorted(set(prev) | set(now)):
        if p in moves or p in moves.values():
            before = prev.get(next((o for o, n in moves.items() if n == p), p))
        else:
            before = prev.get(p)
        after = now.get(p)
        if p in moves:  # the old name of a moved file: its hunk is the "Moved:" one
            continue
        if before is None and after is not None:
            parent, _, base = p.rpartition("/")
            hunks.append([f"File addition: {_q(base)} in {_q(parent)} \"UTF-8\"", "  up 1.0, new 2:9"]
                         + ["+ " + line for line in after.split("\n")[:-1]])
        elif after is None and before is not None:
            hunks.append([f"File deletion: {_q(p)} 2.9 \"UTF-8\"", "B:BD 2.8 -> 2.9:9/2"]
                         + ["- " + line for line in before.split("\n")[:-1]])
        elif before != after:
            hunks.append([f"Replacement in {_q(p)}:1 2.9 \"UTF-8\"", "B:BD 2.9 -> 2.9:99/2",
                          "  up 2.9, new 0:9, down 2.99"]
                         + ["- " + line for line in before.split("\n")[:-1]]
                         + ["+ " + line for line in after.split("\n")[:-1]])
    for n, h in enumerate(hunks, 1):
        out.append(f"{n}. {h[0]}")
        out += h[1:]
        out.append("")
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    root = _root()
    changes = json.loads((root / DB).read_text())
    cmd, args = argv[0], argv[1:]
    if cmd == "reset":
        _write_working_copy(root, changes)
    elif cmd == "log" and args[:2] == ["--hash-only", "--limit"]:
        for c in list(reversed(changes))[: int(args[2])]:
            print(c["hash"])
    elif cmd == "change":
        i = next((k for k, c in enumerate(changes) if c["hash"].startswith(args[0])), None)
        if i is None:
            print(f"Error: Change not found: {args[0]}", file=sys.stderr)
            return 1
        sys.stdout.write(_change_text(changes, i))
    elif cmd == "unrecord" and len(args) == 1:  # the channel only; the working copy is kept
        if not changes or changes[-1]["hash"] != args[0]:
            print(f"Error: Cannot unrecord change {args[0]} because {changes[-1]['hash']} depend on it",
                  file=sys.stderr)
            return 1
        changes.pop()
        (root / DB).write_text(json.dumps(changes))
    else:
        print(f"error: unexpected arguments {argv}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
