"""Everything fitted comes from the training split alone."""

import dataclasses

import numpy as np

from config import Config
from Dataloader import Series, Splits, load_dataset
from experiment import evaluate_forecasts, fit_normalization


def with_other_future(splits: Splits) -> Splits:
    """The same training split; validation and test values changed."""

    def scrambled(series: Series) -> Series:
        noise = np.random.default_rng(0).normal(0, 50, len(series))
        return dataclasses.replace(series, y=series.y * 3 + noise)

    return Splits(splits.train, scrambled(splits.val), scrambled(splits.test))


def test_normalization_statistics_ignore_validation_and_test():
    splits = load_dataset("sine")
    assert fit_normalization(splits) == fit_normalization(
        with_other_future(splits)
    )


def test_the_estimated_season_ignores_validation_and_test(tmp_path):
    def repeat_last(contexts, horizon):
        return np.repeat(contexts[:, -1:], horizon, axis=1)

    config = Config(dataset="sine")
    splits = load_dataset("sine")
    seasons = [
        evaluate_forecasts(repeat_last, config, s, tmp_path)["season"]
        for s in (splits, with_other_future(splits))
    ]
    assert seasons == [40, 40]
