"""Model architectures: flat functional Keras graphs that output logits."""
