"""The ledger's tests: unit (pure), integration (real PostgreSQL and Kafka), e2e (HTTP)."""
