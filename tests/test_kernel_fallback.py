"""Without a C++ compiler the model runs, and trains, on XLA's scans."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import logging, sys
    import jax, numpy as np
    sys.path.insert(0, ".")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    from config import Config
    from Initializers import create_model, uses_fused_kernel
    from TrainTest import forecast_windows, train_step

    config = Config(hidden=8, in_len=8, out_len=4)
    contexts = np.sin(np.arange(40, dtype=np.float32)).reshape(5, 8)
    forecasts = {}
    for kernel in ("fused", "scan"):
        asked = config.replace(kernel=kernel)
        model = create_model(asked, jax.random.PRNGKey(0), 10, 1e-3)
        print(kernel, uses_fused_kernel(asked))
        batch = {
            "context": contexts[:4], "target": contexts[1:, :4],
            "mask": np.ones(4, np.float32),
        }
        model, metrics = train_step(model, batch, jax.random.PRNGKey(1))
        forecasts[kernel] = forecast_windows(model, contexts, 6, 2)
        print("loss", float(metrics["loss"]) > 0)
    print("shape", *forecasts["fused"].shape)
    print("same", np.array_equal(forecasts["fused"], forecasts["scan"]))
    """
)


def test_without_a_compiler_the_model_runs_on_the_scan(tmp_path):
    env = {
        **os.environ,
        "CXX": "no-such-compiler",
        "XDG_CACHE_HOME": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "fused False",
        "loss True",
        "scan False",
        "loss True",
        "shape 5 6",
        "same True",
    ]
    assert done.stderr.count("no C++ compiler 'no-such-compiler' found") == 1
    assert "run as XLA scans instead" in done.stderr
