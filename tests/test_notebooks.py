"""Every notebook in notebooks/ executes top to bottom (CPU, no network, fast mode) and is
committed with its outputs stripped."""

from __future__ import annotations

import os
import time
from pathlib import Path

import nbformat
import pytest
from helpers import REPO_ROOT

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_outputs_are_stripped(path: Path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{path.name}: strip outputs"


def test_notebooks_are_generated_by_the_build_script():
    """Every notebook is `scripts/build_notebooks.py`'s output: edit the cells there."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_notebooks",
                                                  REPO_ROOT / "scripts" / "build_notebooks.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert sorted(script.NOTEBOOKS) == [p.stem for p in NOTEBOOKS]
    for path in NOTEBOOKS:
        built = script.build(path.stem, script.NOTEBOOKS[path.stem])
        nb = nbformat.read(path, as_version=4)
        assert [(c.cell_type, c.source) for c in nb.cells] == \
            [(c.cell_type, c.source) for c in built.cells], f"{path.name}: run the build script"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path: Path, tmp_path, synthetic_data_dir, monkeypatch):
    from nbclient import NotebookClient

    env = {"REGION_SAM3_FAST": "1", "REGION_SAM3_NOTEBOOK_DIR": str(tmp_path),
           "REGION_SAM3_DATA": str(synthetic_data_dir),
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=240, kernel_name="python3",
                   resources={"metadata": {"path": str(REPO_ROOT)}}).execute()
    elapsed = time.perf_counter() - start
    print(f"{path.name}: {elapsed:.0f} s")
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    # the last code cell produced something (a figure or text), not just ran
    last = [c for c in nb.cells if c.cell_type == "code"][-1]
    assert last.outputs, f"{path.name}: last cell printed nothing"
