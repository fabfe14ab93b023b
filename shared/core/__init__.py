"""The event-sourcing core: events and their hash chain, the event store, deciders and the
command runner, the outbox relay, the consumer runner, schema migrations, and the settings,
database, Kafka, logging and metrics plumbing they stand on. Knows nothing of HTTP or of any
service."""
