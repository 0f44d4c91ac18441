"""Inputs: stimuli, fMRI datasets, components, folds, HEAR tasks, and fetching them."""
