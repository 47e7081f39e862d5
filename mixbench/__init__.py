"""mixbench: benchmark data-mixing methods for language-model pre-training."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # `mixbench.api` is imported on first use, so `import mixbench` stays cheap (no Hydra, no torch).
    if name == "api":
        import importlib

        return importlib.import_module("mixbench.api")
    raise AttributeError(f"module 'mixbench' has no attribute {name!r}")
