"""``hrm-lsp index PATH…`` and the index that ``hrm-lsp complete`` builds for one file."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hrm_lsp.index.tiers import RepoIndex


def workspace_of(path: Path) -> Path:
    """The module root of a file (the nearest directory up with a go.mod), else its folder."""
    d = path.resolve().parent
    for cand in [d, *d.parents]:
        if (cand / "go.mod").is_file():
            return cand
    return d


def _tokenizer(model: str | None):
    from hrm_lsp.export.gguf import load_model
    from hrm_lsp.paths import default_model_path

    _, tok, _ = load_model(model or default_model_path())
    return tok


def build(folders: list[Path], tokenizer, *, stdlib: bool | None = None,
          modcache: bool | None = None, quiet: bool = False) -> RepoIndex:
    """Build every tier now (the standard library's once per Go version: then it is read
    from the cache), reporting progress on stderr."""
    index = RepoIndex(tokenizer, stdlib=stdlib, modcache=modcache, background=False)

    def report(message: str, percent: int) -> None:
        if not quiet:
            print(f"index: {message}", file=sys.stderr, flush=True)

    index.folders = [Path(f) for f in folders]
    index.build(report)
    return index


def run_index(paths: list[str], model: str | None, *, stdlib: bool = True,
              modcache: bool = True) -> dict[str, Any]:
    """Index ``paths`` (workspace folders) and return the report of every tier."""
    missing = [p for p in paths if not Path(p).is_dir()]
    if missing:
        raise ValueError(f"not a directory: {', '.join(missing)}")
    index = build([Path(p) for p in paths], _tokenizer(model), stdlib=stdlib, modcache=modcache)
    rep = index.report()
    rep["cache_dir"] = str(index.cache_dir)
    return rep


def format_report(rep: dict[str, Any]) -> list[str]:
    out = [f"{'tier':<10} {'state':<8} {'files':>7} {'tokens':>11} {'bytes':>12} {'seconds':>8}"]
    for t in rep["tiers"]:
        if t["tier"] in ("document", "package"):
            continue  # built per request / per open file
        out.append(f"{t['tier']:<10} {t['state']:<8} {t['files']:>7} {t['tokens']:>11} "
                   f"{t['bytes']:>12} {t['seconds']:>8.2f}" + (f"  {t['message']}" if t["message"] else ""))
    out.append("document and package tiers are built per request and per open file")
    out.append(f"persisted tiers: {rep['cache_dir']}")
    out += [f"warning: {w}" for w in rep.get("warnings", [])]
    return out
