"""Front ends shared by several model families, each in one home.

- :mod:`.kaldi`: torchaudio's Kaldi-compatible filter banks with each family's settings
  (EnCodecMAE mel256, BEATs, AST, Speech2Text) and normalisation constants;
- :mod:`.cochleagram`: the cochleagram of Tuckute et al. 2023 (``cochleagram_1``), shared by
  the SpectroTemporal baseline and the CochDNNs.

A family module names the front end it uses in its specs (``ModelSpec.frontend``), which makes
that module a DVC dependency of the family's stages.
"""
