"""Side-by-side benchmarks of splade-rt against sentence-transformers (python -m benchmarks.run)."""
