"""Every example runs and ends with its own assertion (STYLE.md section 10)."""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
NEEDS = {"mlp_digits.py": ("sklearn",), "model_selection.py": ("sklearn",),
         "augmentation.py": ("sklearn", "matplotlib"), "cnn_digits.py": ("sklearn",),
         "lstm_sequences.py": ("sklearn",)}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(path):
    for module in NEEDS.get(path.name, ()):
        pytest.importorskip(module)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, str(path)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
