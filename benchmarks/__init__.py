"""Benchmarks: `python -m benchmarks [name ...]` runs `bench_<name>.main()` for each.

Each prints its measurements and ratios against a baseline measured in the same
run, because the machine is shared and absolute numbers drift.
"""
