"""The PyTorch twin of the forecaster: same data, same model, torch code."""
