"""Speed benchmarks: printed tables, ratios measured within one run. Not tests."""
