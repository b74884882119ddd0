"""The library every Guangmang service uses: event envelope and catalogue, kombu bus,
outbox and relay, inbox, database helpers, web helpers, auth, config and logging.

It holds no business rules and never imports a service package."""
