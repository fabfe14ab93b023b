"""The ledger's services: allocation, spending, approval, reporting."""
