"""The approval service: decisions on spend requests and holds on families' balances."""
