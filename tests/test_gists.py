"""Specifications of the _jax_gists scripts: each runs and prints its answer."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GISTS = sorted((ROOT / "_jax_gists").glob("*.py"))

# Lines a gist prints only after its own asserts have passed.
EXPECTED = {
    "dense_model.py": ["step 299", "learned weights: kernel"],
    "lstm_uni.py": ["outputs[:, -1] == h: True", "same outputs and carry"],
    "lstm_bidirectional.py": [
        "concat  (2, 6, 8)",
        "two directions run by hand: True",
    ],
    "encoder_decoder_handoff.py": [
        "decoder hidden 16",
        "decode on its own outputs == decode_free: True",
        "-> (3, 20)",
    ],
}


def test_gists_are_found():
    assert len(GISTS) >= 4


@pytest.mark.parametrize("gist", GISTS, ids=lambda path: path.name)
def test_gist_runs(gist: Path):
    assert gist.name in EXPECTED, f"no expected output for {gist.name}"

    # Run as a user would, from the repository root with a relative path.
    result = subprocess.run(
        [sys.executable, str(gist.relative_to(ROOT))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert result.returncode == 0, result.stderr
    for text in EXPECTED[gist.name]:
        assert text in result.stdout
