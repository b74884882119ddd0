"""The system as a whole: the one place that knows every service.

- ``registry``: each service's app, migrations, metadata, handlers and seed;
- ``embedded``: ``python -m system.embedded`` (``make run``) — every service in one process;
- ``rabbitmq_definitions``: writes/checks ``deploy/rabbitmq/definitions.json`` from the handlers.

Services never import each other; only this package composes them.
"""
