"""Downstream evaluation: the paper's layer-weighted MLP probe on HEAR-format tasks.

Modules: ``hear_tasks`` (HEAR task reader and split rules), ``embeddings`` (embed-function
contract and NPZ cache), ``probe`` (probe, grid, k-fold rules), ``metrics`` (heareval scores and
the z-scored Overall), ``mini_tasks`` (offline demo tasks), ``config`` (params sections),
``stages`` (pipeline stage functions: run_downstream, run_build_mini_tasks, run_overall).
"""
