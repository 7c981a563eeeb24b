"""What a run leaves behind for people, all derived from ``results.json`` (and the interval log).

- :mod:`loadgen.reports.files`: writes the derived reports next to ``results.json`` and reads a run back
  (``loadgen report DIR``); the coordinator judged the thresholds before writing it.
- :mod:`loadgen.reports.warnings`: the words of every coded warning (the only place they live).
- :mod:`loadgen.reports.markdown`: ``summary.md`` and the terminal summary, from one set of sections.
- :mod:`loadgen.reports.html` (``report.html``), drawing its charts with :mod:`loadgen.reports.svg`.
- :mod:`loadgen.reports.stats_csv`: ``stats.csv`` in Locust's layout.
- :mod:`loadgen.reports.hlog`: ``latency.hlog``, the per-second histogram log (written by the coordinator).
- :mod:`loadgen.reports.compare`: two runs compared (``loadgen compare``).
- :mod:`loadgen.reports.tables`: the text and Markdown tables and number formats they share.

This file imports nothing, so a caller that needs one of them (the coordinator's interval log, the
plan's table) does not load the others.
"""
