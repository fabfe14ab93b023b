"""The web layer: routes and guards, bearer auth, problem+json, OpenAPI, a service's
lifecycle (pool, relay, consumers, health) and the registry services plug into."""
