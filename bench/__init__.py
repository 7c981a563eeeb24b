"""The benchmark suite behind `make bench` (see README.md): run as `python -m bench.run` from the top of the
repository; the scripts that import nothing from it run as files too (`python bench/closed_loop.py`)."""
