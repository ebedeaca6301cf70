"""Fused LSTM kernels for the CPU: a whole sequence in one C++ call.

XLA runs an LSTM scan as some 30 small operations a time step, each with
its own dispatch cost; `lstm.cc` runs a layer over the whole sequence,
forward or backward, or the whole free-running decoder, in one XLA FFI
custom call. It is compiled for this machine on first use (a few
seconds, with the C++ compiler `$CXX` or `c++`) and cached under
`~/.cache/lstm-seq2seq-forecaster/`.
"""

import ctypes
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import jaxlib

log = logging.getLogger(__name__)

Array = jax.Array
Carry = tuple[Array, Array]  # (c, h), each [batch, hidden]

SOURCE = Path(__file__).with_name("lstm.cc")
FLAGS = (
    "-O3",
    "-march=native",
    "-std=c++17",
    "-shared",
    "-fPIC",
    "-pthread",
    "-fno-math-errno",
    # Lets GCC vectorize the floor and the float-to-int casts of exp.
    "-fno-trapping-math",
)


def cache_dir() -> Path:
    """Where built libraries are kept, one per source, flags and CPU."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lstm-seq2seq-forecaster"


def _compile(compiler: str) -> Path:
    """The shared library for this source, compiler, flags, CPU (the
    compiler's predefined macros) and jaxlib; built once."""
    command = [compiler, *FLAGS, "-I", jax.ffi.include_dir()]
    version = subprocess.run(
        [compiler, "--version"], capture_output=True, text=True, check=True
    ).stdout
    # The macros the compiler predefines for this CPU (__AVX512F__ and the
    # like): a library built for another CPU, in a cache shared with it,
    # is not loaded here.
    target = subprocess.run(
        [compiler, *FLAGS, "-x", "c++", "-E", "-dM", "-"],
        input="",
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    digest = hashlib.sha256()
    for part in (SOURCE.read_text(), " ".join(command), version, target):
        digest.update(part.encode())
    digest.update(jaxlib.__version__.encode())
    library = cache_dir() / f"lstm-{digest.hexdigest()[:16]}.so"
    if library.exists():
        return library

    library.parent.mkdir(parents=True, exist_ok=True)
    log.info("compiling %s (once, kept in %s)", SOURCE.name, library.parent)
    # Built beside its final name and renamed into place, so that two
    # processes compiling at once never load a half-written file.
    with tempfile.TemporaryDirectory(dir=library.parent) as scratch:
        built = Path(scratch) / library.name
        result = subprocess.run(
            [*command, str(SOURCE), "-o", str(built)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            lines = result.stderr.strip().splitlines() or ["no output"]
            errors = [line for line in lines if "error" in line]
            raise RuntimeError((errors or lines)[0])
        os.replace(built, library)
    return library


_LOCK = threading.Lock()  # runs of RUN.py start side by side in threads


def available() -> bool:
    """Whether the fused kernels can run here: a CPU backend and a C++
    compiler that builds them. Says why not, once, if they cannot."""
    return unavailable_reason() is None


def unavailable_reason() -> str | None:
    """Why the fused kernels cannot run here, or None if they can. The
    first call builds (or finds) the library and registers its kernels."""
    with _LOCK:
        return _load()


@functools.cache
def _load() -> str | None:
    try:
        if jax.default_backend() != "cpu":
            raise RuntimeError(f"JAX runs on {jax.default_backend()}, not CPU")
        compiler = os.environ.get("CXX", "c++")
        if shutil.which(compiler) is None:
            raise RuntimeError(f"no C++ compiler {compiler!r} found")
        library = ctypes.cdll.LoadLibrary(str(_compile(compiler)))
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        log.warning(
            "the fused LSTM kernel is unavailable (%s); LSTM layers run "
            "as XLA scans instead",
            error,
        )
        return str(error)
    for name in ("LstmForward", "LstmInfer", "LstmBackward", "LstmDecode"):
        jax.ffi.register_ffi_target(
            name, jax.ffi.pycapsule(getattr(library, name)), platform="cpu"
        )
    return None


def _sequence_call(name, xs, carry, kernel, bias, threads, *shapes):
    """The kernel `name` over time-major xs [time, batch, features] from
    `carry`; its float32 results have `shapes`."""
    c0, h0 = carry
    results = [jax.ShapeDtypeStruct(shape, jnp.float32) for shape in shapes]
    call = jax.ffi.ffi_call(name, results, vmap_method="sequential")
    return call(xs, h0, c0, kernel, bias, threads=threads)


def _forward(xs, carry, kernel, bias, threads):
    """hs and cs [time, batch, hidden] and acts [time, batch, 4 hidden],
    the activated gates: what the backward pass reads."""
    time, batch, _ = xs.shape
    states = (time, batch, carry[1].shape[-1])
    gates = (time, batch, 4 * states[-1])
    return _sequence_call(
        "LstmForward", xs, carry, kernel, bias, threads, states, states, gates
    )


def _infer(xs, carry, kernel, bias, threads):
    """hs [time, batch, hidden] and the last c [batch, hidden]: the same
    numbers as `_forward`'s, without its residuals."""
    time, batch, _ = xs.shape
    hidden = carry[1].shape[-1]
    states, last = (time, batch, hidden), (batch, hidden)
    return _sequence_call(
        "LstmInfer", xs, carry, kernel, bias, threads, states, last
    )


# Outside differentiation JAX calls the function itself, which keeps no
# residuals; under it, the forward rule, which does.
@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _time_major_lstm(xs, carry, kernel, bias, threads):
    hs, c_last = _infer(xs, carry, kernel, bias, threads)
    return (c_last, hs[-1]), hs


def _time_major_lstm_forward(xs, carry, kernel, bias, threads):
    hs, cs, acts = _forward(xs, carry, kernel, bias, threads)
    residuals = (xs, carry, kernel, hs, cs, acts)
    return ((cs[-1], hs[-1]), hs), residuals


def _time_major_lstm_backward(threads, residuals, gradients):
    xs, (c0, h0), kernel, hs, cs, acts = residuals
    (dc_last, dh_last), dhs = gradients
    dhs = dhs.at[-1].add(dh_last)  # the final h is also the last output
    shapes = [jax.ShapeDtypeStruct(a.shape, jnp.float32) for a in (xs, h0, c0)]
    shapes += [
        jax.ShapeDtypeStruct(kernel.shape, jnp.float32),
        jax.ShapeDtypeStruct(kernel.shape[-1:], jnp.float32),
    ]
    call = jax.ffi.ffi_call("LstmBackward", shapes, vmap_method="sequential")
    dxs, dh0, dc0, dkernel, dbias = call(
        xs, h0, c0, kernel, hs, cs, acts, dhs, dc_last, threads=threads
    )
    return dxs, (dc0, dh0), dkernel, dbias


_time_major_lstm.defvjp(_time_major_lstm_forward, _time_major_lstm_backward)


def _require_kernel() -> None:
    reason = unavailable_reason()
    if reason is not None:
        raise RuntimeError(
            f"the fused LSTM kernel cannot run here ({reason}); "
            'kernel="scan" runs the LSTM layers as XLA scans'
        )


def _float32(tree):
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), tree)


def lstm_sequence(
    inputs: Array, carry: Carry, kernel: Array, bias: Array, *, threads: int = 0
) -> tuple[Carry, Array]:
    """An LSTM over a whole sequence, as Flax's `nn.RNN` of an LSTM cell.

    Args:
      inputs: [batch, time, features].
      carry: (c, h), each [batch, hidden]: the state before the first step.
      kernel: [features + hidden, 4 hidden], which multiplies [x, h] into
        the gates in the order i, f, g, o; bias: [4 hidden].
      threads: how many threads share the batch's rows; 0, one per thread
        of XLA's pool. The numbers do not depend on it.

    Returns:
      The final carry (c, h) and the outputs [batch, time, hidden].
    """
    _require_kernel()
    xs, carry, kernel, bias = _float32(
        (inputs.transpose(1, 0, 2), carry, kernel, bias)
    )
    carry, hs = _time_major_lstm(xs, carry, kernel, bias, threads)
    return carry, hs.transpose(1, 0, 2)


def lstm_decode(
    carries: Sequence[Carry],
    cells: Sequence[tuple[Array, Array]],
    head: tuple[Array, Array],
    first: Array,
    steps: int,
    *,
    threads: int = 0,
) -> Array:
    """Free-running decoding by a stack of LSTM cells and a linear head.

    Each step runs the cells, bottom first, on the previous value; the
    head maps the top cell's h to the change from that value, and the
    sum is the step's prediction and the next step's input. Not
    differentiable: training decodes teacher-forced or step by step.

    Args:
      carries: (c, h) of each cell before the first step, [batch, hidden].
      cells: each cell's kernel [features + hidden, 4 hidden] and bias
        [4 hidden], as `lstm_sequence` takes them; features is 1 for the
        bottom cell and hidden for the others.
      head: its kernel [hidden, 1] and bias [1].
      first: [batch], the value before the first step.
      steps: how many values to make.
      threads: as for `lstm_sequence`.

    Returns:
      The predictions [batch, steps].
    """
    _require_kernel()
    buffers = []
    for (c, h), (kernel, bias) in zip(carries, cells, strict=True):
        buffers += [c, h, kernel, bias]
    head_kernel, head_bias = head
    values = jax.ShapeDtypeStruct((first.shape[0], steps), jnp.float32)
    call = jax.ffi.ffi_call("LstmDecode", values, vmap_method="sequential")
    return call(
        *_float32((first, head_kernel[:, 0], head_bias, *buffers)),
        threads=threads,
    )
