"""The benchmark harness: ``python -m bench`` (or ``make bench``); figures go in RESULTS.md."""
