"""Speed benchmarks of the JAX forecaster against its PyTorch twin."""
