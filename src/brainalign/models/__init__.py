"""Audio models: the registry, one module per family, and activation extraction."""
