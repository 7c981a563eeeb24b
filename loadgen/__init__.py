"""loadgen: a distributed open-model HTTP load generator with exact merged HDR percentiles."""

__version__ = "0.1.0"
