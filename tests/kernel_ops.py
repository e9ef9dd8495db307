"""Which kernel ops exist (tests parametrize over them)."""
from pathlib import Path

from gpt2lab.kernels.check import OPS

KERNELS_DIR = Path(__file__).resolve().parent.parent / "kernels"
IMPLEMENTED = [op for op in OPS if (KERNELS_DIR / f"{op}.py").exists()]
