"""A saved run is never half-loaded, mixed up or lost."""

import contextlib
import io
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

import experiment
import RUN
import TrainTest
from config import Config, InputError
from Initializers import create_model

TINY = [
    "--dataset", "sine", "--hidden", "8", "--in-len", "8", "--out-len", "4",
    "--batch-size", "64", "--quiet",
]  # fmt: skip


def run_main(argv: list[str], capsys) -> tuple[int, str]:
    """RUN.main in this process: its exit status and its error output."""
    capsys.readouterr()
    with contextlib.redirect_stdout(io.StringIO()):
        status = RUN.main(argv)
    return status, capsys.readouterr().err


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("saved")
    with contextlib.redirect_stdout(io.StringIO()):
        assert (
            RUN.main([*TINY, "--epochs", "2", "--workdir", str(workdir)]) == 0
        )
    return workdir


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--hidden", "16"], "hidden: 16 asked for, 8 saved"),
        (["--encoder", "bi"], "encoder: 'bi' asked for, 'uni' saved"),
        (
            ["--encoder", "bi", "--merge", "concat"],
            "merge: 'concat' asked for, 'sum' saved",
        ),
    ],
)
def test_another_configuration_is_refused_naming_each_field(
    saved_run, capsys, flags, named
):
    before = snapshot(saved_run)
    argv = [*TINY, "--epochs", "2", *flags, "--workdir", str(saved_run)]
    status, stderr = run_main(argv, capsys)

    assert status == 2
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    assert named in stderr
    if flags[:2] == ["--encoder", "bi"]:
        assert "encoder: 'bi' asked for, 'uni' saved" in stderr
    assert snapshot(saved_run) == before


@pytest.mark.parametrize(
    "changes",
    [{"kernel": "scan"}, {"devices": 1}, {"num_workers": 2}],
)
def test_a_run_resumes_carried_out_another_way(tmp_path, changes):
    saved = Config(dataset="sine")
    experiment.check_same_config(tmp_path, saved.replace(**changes), saved)
    with pytest.raises(InputError, match="hidden: 16 asked for, 64 saved"):
        experiment.check_same_config(
            tmp_path, saved.replace(hidden=16, **changes), saved
        )


def test_a_non_finite_loss_stops_naming_epoch_and_step(
    tmp_path, capsys, monkeypatch
):
    real_step, calls = TrainTest.train_step, []

    def diverging_step(model, batch, key, truth_ratio, mesh=None):
        calls.append(1)
        model, metrics = real_step(model, batch, key, truth_ratio, mesh=mesh)
        if len(calls) == 14:  # epoch 2 of 11 steps, its 3rd step
            metrics = {"loss": jnp.float32(jnp.nan)}
        return model, metrics

    monkeypatch.setattr(TrainTest, "train_step", diverging_step)
    argv = [*TINY, "--epochs", "3", "--checkpoint-every", "1"]
    status, stderr = run_main([*argv, "--workdir", str(tmp_path)], capsys)

    assert status == 1
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    assert "epoch 2, step 14: training loss is nan" in stderr
    assert "latest checkpoint (epoch 1)" in stderr
    manager = TrainTest.open_checkpoints(tmp_path / "sine")
    assert manager.latest_step() == 1
    manager.close()


def test_a_damaged_checkpoint_is_skipped_set_aside_and_trained_anew(
    tmp_path, capsys
):
    argv = [*TINY, "--checkpoint-every", "1", "--workdir", str(tmp_path)]
    assert run_main([*argv, "--epochs", "2"], capsys)[0] == 0
    checkpoints = tmp_path / "sine" / "checkpoints"
    latest = max(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())
    for path in (checkpoints / str(latest) / "encoder").rglob("*"):
        if path.is_file() and path.parent.name == "d":
            path.write_bytes(path.read_bytes()[:10])  # truncated

    status, stderr = run_main([*argv, "--epochs", "2"], capsys)

    assert status == 0
    assert f"{checkpoints / str(latest)}: incomplete or damaged" in stderr
    damaged = [p.name for p in checkpoints.iterdir() if "damaged" in p.name]
    assert len(damaged) == 1 and damaged[0].startswith(f"{latest}.damaged")
    assert (checkpoints / str(latest)).is_dir()  # trained again, saved anew


def test_a_damaged_latest_step_falls_back_to_the_previous_one(tmp_path):
    model = create_model(
        Config(hidden=8, in_len=8, out_len=4), jax.random.PRNGKey(0), 10, 1e-3
    )
    manager = TrainTest.make_checkpoint_manager(tmp_path)
    for epoch, val_mse in ((1, 0.1), (2, 0.5)):  # 1 stays as the best
        meta = {"val_mse": val_mse, "total_steps": 10}
        TrainTest.save_checkpoint(
            manager, epoch, model, norm={"std_floor": 1e-3}, meta=meta
        )
    manager.close()
    (tmp_path / "2" / "decoder" / "manifest.ocdbt").unlink()

    manager = TrainTest.make_checkpoint_manager(tmp_path)
    restored, meta = TrainTest.restore_checkpoint(manager, "latest")
    manager.close()

    assert meta["epoch"] == 1 and meta["damaged"] == [2]
    assert jax.tree.all(
        jax.tree.map(
            lambda a, b: bool((a == b).all()), restored.params, model.params
        )
    )


def test_a_best_between_due_epochs_is_written_unless_a_better_one_follows(
    monkeypatch,
):
    written = []
    monkeypatch.setattr(
        experiment,
        "save_checkpoint",
        lambda manager, epoch, model, **_: written.append(epoch),
    )
    manager = types.SimpleNamespace(
        wait_until_finished=lambda: None, latest_step=lambda: written[-1]
    )
    checkpoints = experiment.Checkpoints(manager, {}, total_steps=1)
    progress = experiment.Progress()
    # (epoch, validation MSE, due), as run_epochs calls save.
    epochs = [(1, 5.0, False), (2, 4.0, False), (3, 6.0, False)]
    epochs += [(4, 3.0, False), (5, 7.0, True), (6, 2.0, False)]
    epochs += [(7, 1.0, True), (8, 0.5, False)]
    for epoch, val_mse, due in epochs:
        progress.epoch = epoch
        best = val_mse <= progress.best_val_mse
        if best:
            progress.best_val_mse, progress.best_epoch = val_mse, epoch
        if best or due:
            checkpoints.save(None, progress, val_mse, due)

    # 1 and 2 gave way to better bests; 4 waited for 5; 6 gave way to 7.
    assert written == [4, 5, 7]
    # Flushed (as when training diverges), the pending best is written.
    assert checkpoints.flush() == 8
    assert written == [4, 5, 7, 8]
