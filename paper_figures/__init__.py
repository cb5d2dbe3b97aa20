"""One script per paper figure, each ``measure`` -> tidy CSV -> ``plot``.

Every script ``figNN_<slug>.py`` defines

* ``FIGURE`` -- the id (``"fig05"``), ``TITLE`` and ``COLUMNS`` (the documented CSV columns),
* ``CONFIGS`` -- the settings of the ``micro``, ``quick`` and ``full`` profiles,
* ``measure(profile, cache_dir, refresh) -> DataFrame`` -- the measurement, cached as CSV,
* ``plot(df, out_dir, profile) -> list[Path]`` -- the PNG and PDF,
* ``main(profile="quick", out_dir=..., refresh=False) -> FigureResult``.

Run one with ``python -m paper_figures.fig05_spread_vs_lr --profile quick`` or all of
them with ``normdyn figures``.  Shared machinery is in :mod:`paper_figures._common`.
"""
