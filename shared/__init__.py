"""The common library of the ledger's services: events, storage, messaging, HTTP, auth."""
