"""Scoring adapters: the lm-eval evaluator, the offline suites, the benchmarks of each family, per-document comparison and the code sandbox."""
