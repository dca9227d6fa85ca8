"""Benchmarks (make bench): ratios measured side by side, never assertions."""
