"""Audio models: the registry, one module per family, and activation extraction.

- :mod:`brainalign.models.registry`: ``ModelSpec``/``WeightsSpec``, ``get_spec``,
  ``model_names``, ``weights_file`` (path + pinned sha256 for DVC), ``verify_weights``.
- :mod:`brainalign.models.extract`: ``ExtractConfig``, ``parse_config``, ``build_runner``,
  ``extract_activations``, and the DVC stage ``run_extract``.
- :mod:`brainalign.models.activations`: the NPZ activation files.
- Families: ``spectemp`` (SpectroTemporal baseline), ``crepe``, ``pesto``, ``fcpe``,
  ``resemblyzer_ge2e``, ``aisfx_cnn``, ``soundnet``, and ``hear`` (any HEAR-API module).
"""
