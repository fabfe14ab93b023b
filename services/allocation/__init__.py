"""The allocation service: pilots, families and their budgets."""
