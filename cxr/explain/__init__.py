"""Explanations: the engine (probe, methods), targets, overlays, reports and the per-fold run."""
