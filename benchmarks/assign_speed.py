"""What `clusterkit assign` costs beyond the unavoidable: importing torch and decoding the files.

    python benchmarks/idx_to_folder.py /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz \
        /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz data/fashion5k --n 5000
    python benchmarks/assign_speed.py data/fashion5k/images --repeats 3

Fits k-means once on the folder (the model `assign` loads), then times, each in a fresh process and
side by side: (a) `import torch` alone, (b) `import torch` plus decoding every file with clusterkit's
loader, (c) `clusterkit assign FOLDER --model RUN` with its table sent to /dev/null. Prints the
median wall time, peak memory and, for (c), which method modules were imported; writes JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine_info, print_table, write_json

# Each probe runs in its own interpreter and reports its peak memory (and for assign, the clusterkit
# method modules it imported) as one JSON line on stderr, written at exit.
_REPORT = (
    "import atexit, json, resource, sys\n"
    "def _report():\n"
    "    methods = sorted(m for m in sys.modules if m.startswith('clusterkit.methods.') and m.count('.') == 2)\n"
    "    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
    "    print('BENCH ' + json.dumps({'peak_mb': round(rss, 1), 'methods': methods}), file=sys.stderr)\n"
    "atexit.register(_report)\n"
)
PROBES = {
    "import torch": "import torch\n",
    "import torch + decode": "import torch\nfrom clusterkit.data import load_images\nload_images(sys.argv[1])\n",
    "clusterkit assign": (
        "sys.argv = ['clusterkit', 'assign', sys.argv[1], '--model', sys.argv[2], '--output', '/dev/null', '--quiet']\n"
        "from clusterkit.cli.main import run\nrun()\n"
    ),
}


def probe(code: str, folder: str, run_dir: str) -> dict:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _REPORT + code, folder, run_dir], capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"probe failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    report = json.loads(next(line for line in done.stderr.splitlines() if line.startswith("BENCH "))[6:])
    return {"seconds": seconds, **report}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/out/assign_speed.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = str(Path(tmp) / "kmeans")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "clusterkit.cli",
                "fit",
                args.folder,
                "--method",
                "kmeans",
                "--k",
                "10",
                "--out",
                run_dir,
                "--quiet",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        runs = {name: [] for name in PROBES}
        for _ in range(args.repeats):  # interleaved, so that a slow moment of the machine hits every probe
            for name, code in PROBES.items():
                runs[name].append(probe(code, args.folder, run_dir))
    n_files = sum(1 for p in Path(args.folder).rglob("*") if p.is_file() and p.suffix.lower() == ".png")
    floor = statistics.median(r["seconds"] for r in runs["import torch + decode"])
    rows = []
    for name, results in runs.items():
        seconds = statistics.median(r["seconds"] for r in results)
        rows.append(
            {
                "probe": name,
                "files": n_files,
                "seconds": round(seconds, 2),
                "vs_torch_and_decode": round(seconds / floor, 2),
                "peak_mb": max(r["peak_mb"] for r in results),
                "method_modules": ",".join(results[-1]["methods"]) or "-",
            }
        )
    print_table(rows, ["probe", "files", "seconds", "vs_torch_and_decode", "peak_mb", "method_modules"])
    write_json(args.out, {"machine": machine_info(), "repeats": args.repeats, "rows": rows})


if __name__ == "__main__":
    main()
