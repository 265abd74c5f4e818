"""Simulated traffic for the demo, the tests and the benchmarks: landing files
with the truths they hold, and a Pub/Sub publisher."""
