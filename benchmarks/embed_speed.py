"""`clusterkit embed` throughput beside what decoding alone costs, on one machine, in one run.

    python benchmarks/embed_speed.py data/fashion/images --backbone efficientnet_lite0

Three probes over the same files, each timed once: decoding the files as a
pixel method reads them (`load_images`, native size), decoding plus the backbone's own
preprocessing (224-px tensors, no network), and the full embed (no cache). Prints a table of
images/s and writes JSON.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor

from _common import machine_info, print_table, write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", default="benchmarks/out/embed_speed.json")
    args = parser.parse_args()

    from clusterkit import load_images
    from clusterkit.data.decode import open_image
    from clusterkit.data.sources import list_source
    from clusterkit.features.backbones import load_backbone
    from clusterkit.workflows.embed import EmbedRequest, embed_source

    files = [f.path for f in list_source(args.source)]
    backbone = load_backbone(args.backbone)
    rows = []

    start = time.perf_counter()
    images = load_images(args.source)
    rows.append({"probe": "decode (load_images, native size)", "seconds": time.perf_counter() - start})

    def prepared(path):
        return backbone.transform(open_image(path).convert("RGB"))

    start = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:  # as embed decodes: 4 threads
        for _ in pool.map(prepared, files):
            pass
    rows.append({"probe": f"decode + {args.backbone} preprocessing", "seconds": time.perf_counter() - start})

    request = EmbedRequest(args.source, args.backbone, use_cache=False, device=args.device, batch_size=args.batch_size)
    start = time.perf_counter()
    features = embed_source(request)
    rows.append({"probe": f"embed ({args.backbone}, no cache)", "seconds": time.perf_counter() - start})

    for row in rows:
        row["images"] = len(images)
        row["images_per_s"] = len(images) / row["seconds"]
    print_table(rows, ["probe", "images", "seconds", "images_per_s"])
    payload = {"machine": machine_info(), "source": args.source, "dim": features.sample_shape[0], "rows": rows}
    write_json(args.out, payload)


if __name__ == "__main__":
    main()
