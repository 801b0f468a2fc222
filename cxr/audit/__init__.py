"""Trusting explanations: localisation against known boxes and model-randomisation sanity checks."""
