"""Facts for bug reports and metrics.json, found without importing torch (help must be instant)."""

from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
from pathlib import Path

from clusterkit._version import __version__


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def cuda_status() -> str:
    """'available (N devices)' or why not: torch's CUDA library present and the driver sees a GPU."""
    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        return "not available (torch not installed)"
    lib = Path(spec.origin).parent / "lib"
    if not any(lib.glob("libtorch_cuda*")):
        return "not available (CPU-only build of torch)"
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return "not available (no NVIDIA driver found)"
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value == 0:
        return "not available (driver reports no GPU)"
    return f"available ({count.value} device{'s' if count.value > 1 else ''})"


def version_report() -> str:
    return "\n".join(
        [
            f"clusterkit {__version__}",
            f"torch {package_version('torch')}",
            f"torchvision {package_version('torchvision')}",
            f"cuda {cuda_status()}",
        ]
    )
