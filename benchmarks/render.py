"""How fast does `sitegen render` turn a store into pages? Target: >= 300 pages/s on a 2-core CPU.

Builds a synthetic store (tests/fixture_store.py, numpy + Pillow only) scaled to thousands of units,
renders it twice (cold, then warm: the second run also replaces the first site, as a re-render does),
and prints pages per second of wall time and of CPU time. CPU time is the figure to compare across
machines: wall time grows with whatever else the machine runs (`load` is printed for that reason).
The link checker is timed as well, since `sitegen build --check` runs it after a render.

Usage:
    python benchmarks/render.py [--units 64,256,1024] [--classes 160] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fixture_store import make_fixture_store  # noqa: E402

from sitegen.render import check_site, render_site  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--units", default="64,256,1024", help="units of conv1,conv2,fc6 (default: 64,256,1024)")
    ap.add_argument(
        "--classes", type=int, default=160, help="classes of the dataset (default: 160, as TU-Berlin)"
    )
    ap.add_argument("--keep", type=Path, help="write store and site here instead of a temporary folder")
    args = ap.parse_args()
    conv1, conv2, fc6 = (int(x) for x in args.units.split(","))

    root = args.keep or Path(tempfile.mkdtemp(prefix="sitegen-bench-"))
    try:
        t = time.perf_counter()
        store = make_fixture_store(
            root / "store",
            n_units={"conv1": conv1, "conv2": conv2, "fc6": fc6},
            n_classes=args.classes,
            distinct_sprites=97,
        )
        print(
            f"store: 2 networks, 3 atlas checkpoints, units {conv1}/{conv2}/{fc6}/{args.classes} "
            f"per layer, built in {time.perf_counter() - t:.1f} s"
        )
        site = root / "site"
        for label in ("cold", "warm"):
            cpu = time.process_time()
            report = render_site(store, site)
            cpu = time.process_time() - cpu
            print(
                f"render ({label}): {report.pages} pages, {report.files} files, {report.bytes / 1e6:.1f} MB "
                f"in {report.seconds:.2f} s wall / {cpu:.2f} s CPU -> "
                f"{report.pages / report.seconds:.0f} pages/s wall, {report.pages / cpu:.0f} pages/s CPU"
            )
        biggest = max((p for p in site.rglob("*.html")), key=lambda p: p.stat().st_size)
        print(f"largest page: {biggest.relative_to(site)} {biggest.stat().st_size / 1e6:.2f} MB (limit 2 MB)")
        t = time.perf_counter()
        problems = check_site(site)
        dt = time.perf_counter() - t
        print(
            f"link check: {report.pages} pages in {dt:.2f} s ({report.pages / dt:.0f} pages/s), "
            f"{len(problems)} problems"
        )
        print(f"load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
