"""Downstream evaluation: the paper's layer-weighted MLP probe on HEAR-format tasks."""
