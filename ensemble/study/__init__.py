"""Listening studies: a study file, its rounds served to raters, what they heard and ranked, the analysis.

* :mod:`ensemble.study.spec`: the study file (YAML), checked field by field;
* :mod:`ensemble.study.controls`: the low anchor's planted seam faults;
* :mod:`ensemble.study.store`: a prepared study folder served to raters (assignment, per-rater order,
  listening and ratings logs on disk, resumable across restarts);
* :mod:`ensemble.study.analysis`: screening, Plackett-Luce strengths, Kendall's W, the split-half
  ceiling and the composite's tau, all resampled by rater; the report.

The rendering (``python -m ensemble study prepare``) is an offline job: :mod:`ensemble.jobs.study_prepare`.
No Gradio here.
"""
