"""Front ends shared by several model families, each in one home.

- :mod:`.kaldi`: torchaudio's Kaldi-compatible filter banks with each family's settings
  (EnCodecMAE mel256, BEATs, AST, Speech2Text) and normalisation constants;
- :mod:`.cochleagram`: the cochleagram of Tuckute et al. 2023 (``cochleagram_1``), shared by
  the SpectroTemporal baseline and the CochDNNs;
- :mod:`.librosa_legacy`: librosa-style STFT, mel and dB as the pinned librosa 0.7-era versions
  computed them (DCASE2020, DeepSpeech2, ZeroSpeech), librosa 0.11's behaviour as an option.

A family module names the front end it uses in its specs (``ModelSpec.frontend``), which makes
that module a DVC dependency of the family's stages.
"""
