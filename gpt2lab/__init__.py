"""gpt2lab: learn GPT-2 from the inside.

Subpackages map onto the repository's top-level folders (see pyproject.toml):
``gpt2lab.datasets`` (datasets/), ``gpt2lab.kernels`` (kernels/), ``gpt2lab.gpt2`` (gpt2/),
``gpt2lab.explain`` (explain/), ``gpt2lab.widgets`` (widgets/).
"""
import os as _os
import pkgutil as _pkgutil

# `make setup` installs strict editable: gpt2lab's subpackages are links in build/__editable__*/gpt2lab/.
# Run from the checkout's root, this folder (gpt2lab/, without them) is found first; extend_path adds the
# other gpt2lab/ folders on sys.path (the link tree), so gpt2lab.kernels etc. import from any directory.
__path__ = _pkgutil.extend_path(__path__, __name__)

# numba's parallel kernels and PyTorch each bring an OpenMP runtime, and here they share the same cores in
# one process (the live parity check runs both on every verified step). By default an OpenMP worker spins
# for a while after each parallel region, stealing the cores the other runtime needs next: measured here,
# that slowed torch's attention ~5x next to numba and flipped benchmark ratios. Passive workers sleep at
# once. The variable is read when an OpenMP runtime loads, so it takes effect when gpt2lab is imported
# before torch and numba; set OMP_WAIT_POLICY yourself to override.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
