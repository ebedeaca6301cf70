"""The walkthrough notebook runs top to bottom and is stored clean."""

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "RUN.ipynb"


def read_notebook() -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOK, as_version=4)


def code_cells(notebook: nbformat.NotebookNode) -> list:
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


@pytest.fixture(scope="module")
def executed():
    """The notebook after a run of 2 epochs of a tiny model."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("NOTEBOOK_EPOCHS", "2")
        env.setenv("NOTEBOOK_HIDDEN", "8")
        env.setenv("NOTEBOOK_DATASET", "sine")
        notebook = read_notebook()
        NotebookClient(
            notebook,
            kernel_name="python3",
            timeout=300,
            resources={"metadata": {"path": str(NOTEBOOK.parent)}},
        ).execute()
    return notebook


def text_of(notebook: nbformat.NotebookNode) -> str:
    return "".join(
        output.get("text", "")
        for cell in code_cells(notebook)
        for output in cell.outputs
        if output.output_type == "stream"
    )


def test_stored_notebook_has_no_outputs_or_execution_counts():
    notebook = read_notebook()

    nbformat.validate(notebook)
    assert notebook.metadata.kernelspec.name == "python3"
    assert code_cells(notebook)
    for cell in code_cells(notebook):
        assert cell.outputs == []
        assert cell.execution_count is None


def test_notebook_runs_and_reports_the_test_mse(executed):
    errors = [
        output
        for cell in code_cells(executed)
        for output in cell.outputs
        if output.output_type == "error"
    ]
    text = text_of(executed)

    assert errors == []
    assert re.search(r"epoch +2 ", text)
    assert re.search(r"test MSE +\d\.\d{3}e[+-]\d\d", text)
    assert re.search(r"last-value MSE +\d\.\d{3}e[+-]\d\d", text)


def test_notebook_shows_its_figures_inline(executed):
    figures = [
        output
        for cell in code_cells(executed)
        for output in cell.outputs
        if "image/png" in output.get("data", {})
    ]

    # The splits, the learning curves and the stitched test forecasts.
    assert len(figures) == 3
