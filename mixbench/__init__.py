"""mixbench: benchmark data-mixing methods for language-model pre-training."""

__version__ = "0.1.0"
