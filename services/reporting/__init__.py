"""The reporting service: balances, history and evaluation figures, rebuilt from the log."""
