"""r3nb's benchmarks: ``python bench/run.py [--quick] [--with-jupyter-ai]``."""
