#!/usr/bin/env bash
# The checks that need a CUDA GPU, as one short run (a few minutes on one GPU):
#   1. every deep method's fit time on CUDA beside the baselines, digits, seed 0 (quality.py);
#   2. determinism on CUDA: the same DEPICT seed twice gives the same assignments;
#   3. `assign` on the GPU reproduces the fit's assignments.
# Usage, from the repository root on a machine with a GPU:  OUT=some/folder bash benchmarks/cuda_check.sh
# Installs the project with --no-deps (torch and the rest must already be there).
set -euo pipefail
OUT=${OUT:-benchmarks/out/cuda}
mkdir -p "$OUT"
python -m pip install --quiet --no-deps --no-build-isolation -e .
clusterkit --version | tee "$OUT/version.txt"
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU visible')"

python benchmarks/quality.py --methods kmeans,spectral,sanet,depict,gatcluster --seeds 0 --device cuda \
    --out "$OUT/quality-cuda.json" | tee "$OUT/quality-cuda.txt"

for run in a b; do
    clusterkit fit builtin:digits --method depict --k 10 --seed 0 --device cuda --out "$OUT/depict-$run" --force --quiet > /dev/null
done
cmp "$OUT/depict-a/assignments.csv" "$OUT/depict-b/assignments.csv"
echo "depict on CUDA: the same seed twice gave the same assignments" | tee -a "$OUT/checks.txt"

clusterkit datasets export digits "$OUT/digits" > /dev/null
clusterkit assign "$OUT/digits/images" --model "$OUT/depict-a" --device cuda > "$OUT/assign.csv"
python - "$OUT" <<'PY'
import csv, sys
out = sys.argv[1]
fit = {r["path"].split("/")[-1]: r["cluster"] for r in csv.DictReader(open(f"{out}/depict-a/assignments.csv"))}
new = {r["path"].split("/")[-1]: r["cluster"] for r in csv.DictReader(open(f"{out}/assign.csv"))}
same = sum(fit[p] == c for p, c in new.items())
print(f"assign on CUDA: {same} of {len(new)} images in the fit's cluster")
sys.exit(0 if same == len(new) == len(fit) else 1)
PY
echo "assign on CUDA reproduces the fit" | tee -a "$OUT/checks.txt"
