"""The ``ledger`` command: tokens, serving, migrations, topics, audits, and the commands
services add to it."""
