"""Execute the exploration notebooks top to bottom (nbclient) and check what they computed.

The kernel is this interpreter: a kernelspec pointing at ``sys.executable`` is written into a
temporary ``JUPYTER_PATH`` (nothing is installed outside the test's tmp dir). The notebook runs
on the tiny random Llama (``NEURONSCOPE_NOTEBOOK_MODEL=tiny-llama``) to keep CI fast; every code
path is the one SmolLM2 takes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def kernel(tmp_path, monkeypatch) -> str:
    name = "neuronscope-test"
    spec = tmp_path / "jupyter" / "kernels" / name
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": name,
        "language": "python",
    }))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter-data"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    return name


def _execute(path: Path, kernel: str, cwd: Path, timeout: int = 1200):
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, kernel_name=kernel, timeout=timeout, resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def test_spurious_neurons_notebook(kernel, tmp_path, monkeypatch):
    summary_path = tmp_path / "summary.json"
    monkeypatch.setenv("NEURONSCOPE_NOTEBOOK_MODEL", "tiny-llama")
    monkeypatch.setenv("NEURONSCOPE_NOTEBOOK_THREADS", "1")
    monkeypatch.setenv("NEURONSCOPE_NOTEBOOK_SUMMARY", str(summary_path))
    nb = _execute(ROOT / "notebooks" / "spurious_neurons.ipynb", kernel, tmp_path)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    s = json.loads(summary_path.read_text())
    assert s["model"] == "tiny-llama" and s["steps"] >= 1
    # the forget set holds facts the base model answers correctly
    assert s["forget_before"] == 1.0
    # spurious neurons are sorted by D̃− and the Σ top-100 D̃− of the summary covers the listed ones
    vals = [row[3] for row in s["top_spurious"]]
    assert vals == sorted(vals, reverse=True) and all(v >= 0 for v in vals)
    assert s["influence"]["sum_top_d_minus"] >= sum(vals) - 1e-9
    # ablating nothing reproduces the unlearned model's forget accuracy
    ab = s["ablation"]
    assert ab["count"][0] == 0 and ab["accuracy"][0] == pytest.approx(s["forget_after"])
    assert ab["control_accuracy"][0] == pytest.approx(s["forget_after"])
    assert all(0 <= a <= 1 for a in ab["accuracy"] + ab["control_accuracy"])
    # the top-k ablation inside the context manager matches the sweep's entry for k
    k = s["ablate_k"]["k"]
    if k in ab["count"]:
        assert s["ablate_k"]["forget"] == pytest.approx(ab["accuracy"][ab["count"].index(k)])
    # the patch sweep with 0 neurons is the unlearned model; the context-manager runs match the sweeps
    for sw in s["sweeps"].values():
        assert sw["accuracy"][0] == pytest.approx(s["forget_after"])
    if k in s["sweeps"]["patch"]["count"]:
        assert s["patch_k"]["forget"] == pytest.approx(s["sweeps"]["patch"]["accuracy"][s["sweeps"]["patch"]["count"].index(k)])
    # both attribution targets were computed on the same forget items
    assert len(s["prob_target"]["p_before"]) == len(s["prob_target"]["p_after"]) == 8
    # figures were produced (plotly outputs) and the token-level inspection printed its neuron
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "most negative after unlearning at token" in text
    n_figs = sum("application/vnd.plotly.v1+json" in o.get("data", {}) or "text/html" in o.get("data", {})
                 for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert n_figs >= 4
