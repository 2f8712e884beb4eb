"""`clusterkit report` on a large run: its time and the page's size stay bounded as N grows.

    python benchmarks/report_scale.py data/fashion/images --n 2000,50000

For each N, a folder of N symbolic links to the source's images (cycled, so any folder will do) is
fitted with k-means (k = 10), then the report is made; the table gives the fit and report times and
the page's size. Writes JSON.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import machine_info, print_table, write_json


def linked_folder(source: Path, n: int, root: Path) -> Path:
    files = sorted(p for p in source.rglob("*.png"))
    folder = root / f"links{n}"
    folder.mkdir()
    for i in range(n):
        (folder / f"{i:06d}.png").symlink_to(files[i % len(files)].resolve())
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("--n", default="2000,50000")
    parser.add_argument("--out", default="benchmarks/out/report_scale.json")
    args = parser.parse_args()

    from clusterkit.workflows.fit import FitRequest, run_fit
    from clusterkit.workflows.report import build_report

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(x) for x in args.n.split(",")):
            folder = linked_folder(args.source, n, Path(tmp))
            start = time.perf_counter()
            run = run_fit(FitRequest(str(folder), method="kmeans", k="10", out=Path(tmp) / f"run{n}")).run_dir
            fitted = time.perf_counter() - start
            result = build_report(run, device="cpu")
            size = result.path.stat().st_size
            rows.append({"images": n, "fit_s": fitted, "report_s": result.seconds, "page_mb": size / 2**20})
    print_table(rows, ["images", "fit_s", "report_s", "page_mb"])
    write_json(args.out, {"machine": machine_info(), "source": str(args.source), "rows": rows})


if __name__ == "__main__":
    main()
