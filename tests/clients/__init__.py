"""Flows run with clients generated from the services' OpenAPI documents
(tests/e2e/test_generated_clients.py), each in the generators' own environment."""
