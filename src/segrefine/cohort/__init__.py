"""Cohort scale: ``predict``, ``refine-gcn`` and ``suggest`` over many volumes on Dask distributed.

- :mod:`~segrefine.cohort.tasks`: the inputs of a cohort (a folder, a list file, a
  Decathlon dataset), the per-case tasks a worker runs (the model loaded once per
  worker process), resume checks and the volume-level review figures.
- :mod:`~segrefine.cohort.engine`: ``run_cohort`` on a local cluster or an existing
  scheduler, writing ``OUT/manifest.json`` (imports Dask distributed).
- :mod:`~segrefine.cohort.queue`: ``review_queue``, the volumes ranked by expected
  gain from review (no Dask import: the web app uses it).

See docs/cohort.md.
"""
