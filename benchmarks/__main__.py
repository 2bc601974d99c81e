"""`python -m benchmarks`: the whole results suite (see benchmarks/suite.py)."""

from benchmarks.suite import main

main()
