"""Producing the paper figures: the runner (:mod:`~normdyn.figures.runner`), the launchers
of the planned training runs (:mod:`~normdyn.figures.launch`) and the run cache
(:mod:`~normdyn.figures.run_cache`).  The figure scripts themselves stay in the checkout's
``paper_figures/``; the runner finds and loads them, the package never imports them."""
