"""Fig. 5: brain similarity across EnCodecMAE pretraining.

- :mod:`~brainalign.pretraining.config`: the params.yaml ``pretraining`` section;
- :mod:`~brainalign.pretraining.checkpoints`: which checkpoints a run scores (steps, files,
  pinned sha256, the model they load into);
- :mod:`~brainalign.pretraining.miniature`: the miniature pretraining of the embedded default;
- :mod:`~brainalign.pretraining.score`: one checkpoint's activations and layer-wise RSA, and
  the content-keyed cache;
- :mod:`~brainalign.pretraining.table`: the tidy table, its metric, the reproduced-vs-published
  rows;
- :mod:`~brainalign.pretraining.stages`, :mod:`~brainalign.pretraining.cli`: the DVC stages
  and their ``brainalign pretraining`` commands. The figure is
  :mod:`brainalign.report.figure5`.
"""
