"""Validator latency per stage on real Go standard-library files: cold, warm and cached.

    .venv/bin/python benchmarks/validators.py [--repeat 10] [--json]

"cold" runs with an empty Go build cache (a fresh HRM_LSP_CACHE in a temp dir, so the first
``go vet`` compiles the package's dependencies); "warm" repeats the same stage with the
build cache filled (the steady state in an editor); "cached" is a repeated ``validate`` call
answered from the result cache. Vet runs in place on the stdlib package (the edited text is
overlaid, nothing is written). Results go to docs/benchmarks.md (## Validators).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

# Fresh caches before hrm_lsp looks at them: the first vet below is truly cold.
_TMP = tempfile.TemporaryDirectory(prefix="hrm-lsp-bench-")
os.environ["HRM_LSP_CACHE"] = _TMP.name

from hrm_lsp.validators import find_go, syntax_errors, validate  # noqa: E402
from hrm_lsp.validators.gofmt import run_gofmt  # noqa: E402
from hrm_lsp.validators.vet import run_vet  # noqa: E402
from hrm_lsp.validators.workspace import package_context  # noqa: E402

FILES = ["strings/strings.go", "sort/sort.go", "encoding/json/encode.go", "net/http/server.go"]
VET_PACKAGES = ["strings/strings.go", "sort/sort.go"]


def _ms(repeat: int, fn, *args) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn(*args)
        out.append((time.perf_counter() - t) * 1000.0)
    return out


def _stats(xs: list[float]) -> dict:
    return {"median_ms": round(statistics.median(xs), 3), "min_ms": round(min(xs), 3), "n": len(xs)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    tc = find_go()
    src = tc.goroot / "src"
    rows: list[dict] = []

    def row(stage: str, rel: str, text: str, times: list[float]) -> None:
        rows.append({"stage": stage, "file": rel, "kb": round(len(text.encode()) / 1024, 1), **_stats(times)})

    for rel in FILES:
        text = (src / rel).read_text()
        row("syntax", rel, text, _ms(args.repeat, syntax_errors, text))
        row("gofmt cold", rel, text, _ms(1, run_gofmt, text, tc, 60))
        row("gofmt warm", rel, text, _ms(args.repeat, run_gofmt, text, tc, 60))

    for rel in VET_PACKAGES:
        path = src / rel
        text = path.read_text()
        ctx = package_context(path, tc)
        row("vet cold", rel, text, _ms(1, run_vet, text, ctx, tc, 600))
        row("vet warm", rel, text, _ms(args.repeat, run_vet, text, ctx, tc, 60))
        # Edits the build cache has not seen: vet must type-check the package again.
        edited = [text + f"\n// edit {i}\n" for i in range(args.repeat)]
        times = []
        for e in edited:
            times += _ms(1, run_vet, e, ctx, tc, 60)
        row("vet warm, new edit", rel, text, times)
        full = validate(text, path, timeout=60)
        assert full.ok, full.diagnostics
        row("validate, cached", rel, text, _ms(args.repeat * 10, validate, text, path))

    meta = {
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
        "python": platform.python_version(),
        "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
        "go": tc.version,
        "command": "python benchmarks/validators.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    if args.json:
        print(json.dumps({"meta": meta, "rows": rows}, indent=2))
    else:
        print(f"# {meta['date']} · {meta['machine']} · Python {meta['python']} · {meta['go']} · "
              f"load average {meta['load_avg_1m_at_end']}")
        print(f"# {meta['command']}")
        print("| stage | file | KiB | median ms | min ms | n |")
        print("|---|---|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['stage']} | {r['file']} | {r['kb']} | {r['median_ms']} | {r['min_ms']} | {r['n']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
