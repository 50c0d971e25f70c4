"""Benchmarks that print ratios measured in one run. Run each from the repository root as a module, e.g.
`python -m bench.sampler`; they import the pack and `scripts/` as packages, without path tricks."""
