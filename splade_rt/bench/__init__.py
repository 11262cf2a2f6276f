"""splade-bench: measure an export on this machine, as users deploy it (installed with the package).

The repository's `benchmarks.run` builds on the same measurement code (worker, runner, measure).
"""
