"""One module per framework; each has WORKLOADS, info(), run(workload, repeat, min_time)
-> dict of raw numbers, and w3_build(stopwatch) -> (step, sync) for W7.

FRAMEWORKS maps the harness's row names to (module, module-level settings, the import
that decides whether it is installed, the workloads it runs)."""

from __future__ import annotations

import importlib
import importlib.util

FRAMEWORKS = {
    "graphdl": ("fw_graphdl", {"BACKEND": "llvm"}, "graphdl",
                ("W1", "W2", "W3", "W4", "W5", "W6", "W7")),
    "graphdl-ref": ("fw_graphdl", {"BACKEND": "reference"}, "graphdl", ("W3", "W4")),
    "numpy": ("fw_numpy", {}, "numpy", ("W1", "W2", "W3", "W4")),
    "torch": ("fw_torch", {"MODE": "eager"}, "torch",
              ("W1", "W2", "W3", "W4", "W5", "W6", "W7")),
    "torch.compile": ("fw_torch", {"MODE": "compile"}, "torch",
                      ("W1", "W3", "W4", "W5", "W6", "W7")),
    "jax.jit": ("fw_jax", {}, "jax", ("W1", "W2", "W3", "W4", "W5", "W6", "W7")),
    "pytensor": ("fw_pytensor", {}, "pytensor", ("W1", "W2", "W3", "W4", "W7")),
}
# Workloads graphdl cannot run yet (the table shows "not available"): none since W5/W6 landed.
GRAPHDL_MISSING = ()


def installed(name: str) -> bool:
    return importlib.util.find_spec(FRAMEWORKS[name][2]) is not None


def load(name: str):
    module_name, settings, _, _ = FRAMEWORKS[name]
    module = importlib.import_module(f"{__name__}.{module_name}")
    for key, value in settings.items():
        setattr(module, key, value)
    return module
