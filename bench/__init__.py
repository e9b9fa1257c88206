"""Allotment's benchmark harness: `python3 dev.py bench` (see docs/performance.md).

Run on the lab-sized data set (devtools/labgen.py) in its own database, with real PostgreSQL, Redis
and Celery workers. Every figure is printed next to a baseline measured in the same run.
"""
