"""Run every notebook and keep its outputs in the file, so GitHub and a reader see the
figures before running anything: ``python notebooks/refresh_outputs.py [name ...]``.

Each notebook runs from this folder on the ``python3`` kernel of the current environment
(nbclient, as nbmake does in CI). What changes from one execution to the next without the
results changing is left out, so a refresh with the same code gives the same file: cell
execution timings, the kernel's metadata, and widget state.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent


def refresh(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(HERE)}}).execute()
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    nb.metadata.pop("widgets", None)
    nb.metadata["language_info"] = {"name": "python"}
    nbformat.write(nb, path)


if __name__ == "__main__":
    names = sys.argv[1:] or sorted(p.stem for p in HERE.glob("*.ipynb"))
    for name in names:
        print(f"running {name}", flush=True)
        refresh(HERE / f"{name}.ipynb")
