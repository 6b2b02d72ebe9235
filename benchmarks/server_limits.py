"""Costs behind the server's robustness limits (docs/server.md, "Limits"): a keystroke in a
large document (line index updated per edit vs rebuilt), parsing a huge line of tool output
(the regex that was replaced vs the current parser), and the frame parser's throughput.

    python benchmarks/server_limits.py [--mb 5]

Prints a Markdown table; figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

from hrm_lsp.server.documents import DocumentStore
from hrm_lsp.server.framing import FrameParser
from hrm_lsp.server.positions import LineIndex, _scan
from hrm_lsp.validators.go import find_go
from hrm_lsp.validators.vet import classify_unavailable
from hrm_lsp.validators.workspace import PackageContext

OLD_REGEX = re.compile(r"(?P<pkg>\S+@\S+?):? .*(?:module lookup disabled|GOPROXY=off|missing go\.sum entry)")


def timed(fn, n: int = 1) -> float:
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=5.0)
    args = ap.parse_args()
    rows = []
    line = "\tx := fmt.Sprintf(\"%d\", i) // a typical line of Go\n"
    text = "package a\n" + line * int(args.mb * 1e6 / len(line))
    store = DocumentStore()
    doc = store.open("file:///a.go", text, 1)
    _ = doc.index
    mid = doc.index.line_count // 2
    v = [1]

    def keystroke():
        v[0] += 1
        store.change("file:///a.go", v[0], [((mid, 3, mid, 3), "y")])
        _ = store.get("file:///a.go").index

    rows.append((f"keystroke in a {args.mb:g} MB document (index updated)", timed(keystroke, 20)))
    rows.append((f"line index rebuilt per keystroke, as before (regex scan of {args.mb:g} MB)",
                 timed(lambda: _scan(doc.text, 0, len(doc.text)), 5)))
    rows.append((f"line index built at didOpen ({args.mb:g} MB, LF only)",
                 timed(lambda: LineIndex(doc.text), 5)))
    tc = find_go()
    ctx = PackageContext(file=Path("/m/a.go"), pkg_dir=None, module_root=None, module_path=None)
    for n in (8_000, 16_000):
        line_n = "x" * n
        rows.append((f"old offline-module regex, one {n // 1000}k-char line",
                     timed(lambda s=line_n: OLD_REGEX.search(s))))
    big = "./a.go:4:6: undefined: " + "x" * 2_000_000
    rows.append(("classify_unavailable, one 2 MB line (now)", timed(lambda: classify_unavailable(big, ctx, tc))))
    body = b'{"jsonrpc":"2.0","method":"x","params":{"t":"' + b"a" * 1_000_000 + b'"}}'
    data = (b"Content-Length: %d\r\n\r\n" % len(body) + body) * 20

    def parse():
        p = FrameParser()
        for i in range(0, len(data), 65536):
            p.feed(data[i:i + 65536])

    rows.append(("frame parser, 20 MB in 64 KiB chunks", timed(parse)))
    print("| what | ms |\n|---|---:|")
    for what, ms in rows:
        print(f"| {what} | {ms:.2f} |")


if __name__ == "__main__":
    main()
