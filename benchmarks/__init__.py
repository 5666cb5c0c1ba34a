"""The benchmarks: each module is a script, run from the repository's root.

``python -m benchmarks.fanout`` and ``python benchmarks/fanout.py`` run the same code: run
by its path, a script puts the repository's root first on the import path, so every
process it starts (fleets, pools, Dask workers) imports ``benchmarks`` the same way.
"""
