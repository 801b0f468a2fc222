"""cxr: train chest X-ray classifiers, evaluate them per fold, and explain every prediction."""

__version__ = "0.1.0"
