"""Scale-out on SLURM: the pipeline's stale DVC stages as submitit jobs, recorded in DVC.

``dag`` asks DVC what is stale and in which order; ``runner`` submits, waits and commits;
``job`` is what runs inside each SLURM job; ``localslurm`` starts a single-node SLURM here.
"""
