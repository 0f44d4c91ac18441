"""brainalign: model-brain alignment of audio representations (Pepino et al., 2025)."""

__version__ = "0.1.0"
