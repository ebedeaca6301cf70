"""Forecast errors and the naive baselines every forecast is shown beside."""

import numpy as np


def forecast_errors(forecast: np.ndarray, truth: np.ndarray) -> dict:
    """MSE, MAE, RMSE and sMAPE (in percent) over all values.

    sMAPE is the mean of 2 |f - y| / (|f| + |y|), taken as 0 where both
    are 0.
    """
    forecast = np.asarray(forecast, np.float64)
    truth = np.asarray(truth, np.float64)
    error = forecast - truth
    scale = np.abs(forecast) + np.abs(truth)
    ratio = np.divide(
        2 * np.abs(error), scale, out=np.zeros_like(scale), where=scale > 0
    )
    mse = float(np.mean(error**2))
    return {
        "mse": mse,
        "mae": float(np.mean(np.abs(error))),
        "rmse": float(np.sqrt(mse)),
        "smape": float(100 * np.mean(ratio)),
    }


def last_value(contexts: np.ndarray, horizon: int) -> np.ndarray:
    """Repeats each window's last value: [n, in_len] -> [n, horizon]."""
    return np.repeat(contexts[:, -1:], horizon, axis=1)


def seasonal_naive(
    contexts: np.ndarray, horizon: int, season: int
) -> np.ndarray:
    """Repeats each window's last `season` values: [n, horizon]."""
    if not 1 <= season <= contexts.shape[1]:
        raise ValueError(f"season {season} does not fit in the window")
    last_season = contexts[:, contexts.shape[1] - season :]
    return last_season[:, np.arange(horizon) % season]


def drift(contexts: np.ndarray, horizon: int) -> np.ndarray:
    """Extends the line through each window's first and last values."""
    contexts = np.asarray(contexts, np.float64)
    slope = (contexts[:, -1] - contexts[:, 0]) / max(contexts.shape[1] - 1, 1)
    steps = np.arange(1, horizon + 1)
    return contexts[:, -1:] + slope[:, None] * steps


def estimate_season(y: np.ndarray, max_lag: int) -> int | None:
    """The period, in samples, of the strongest seasonality of a series.

    The first lag in [2, max_lag], past the autocorrelation's first turn
    negative, at which the autocorrelation of the differenced series (so
    that a trend does not pass for a season) has a local maximum above 0.5
    and within 90% of the highest; None if there is no such peak.
    """
    change = np.diff(np.asarray(y, np.float64))
    change = change - change.mean()
    variance = np.dot(change, change)
    max_lag = min(max_lag, len(change) // 2 - 1)
    if max_lag < 2 or variance <= 1e-12 * len(change):
        return None
    lags = np.arange(1, max_lag + 2)
    # Divided by the number of products, so long lags are not penalized.
    acf = np.array(
        [np.dot(change[:-k], change[k:]) / (len(change) - k) for k in lags]
    )
    acf /= variance / len(change)
    # A season shows as a return of correlation after it has turned
    # negative; a bump before that is the smoothness of the series.
    negative = np.flatnonzero(acf < 0)
    if negative.size == 0:
        return None
    peaks = [
        i
        for i in range(negative[0] + 1, len(lags) - 1)
        if acf[i] > 0.5 and acf[i] >= acf[i - 1] and acf[i] >= acf[i + 1]
    ]
    if not peaks:
        return None
    # Multiples of the period peak about as high as the period itself:
    # take the shortest lag that comes close to the highest peak.
    highest = max(acf[i] for i in peaks)
    return int(lags[min(i for i in peaks if acf[i] >= 0.9 * highest)])
