"""The whole system in one process, for ``make run``: no Docker, no RabbitMQ, no PostgreSQL.

Each service keeps its own SQLite file and its own port (gateway on 8000, activity 8001, points
8002, merchant 8003); their workers exchange events over kombu's in-memory transport.

The in-memory broker forgets what it holds when the process dies, but every event is first
committed to a service's outbox. At start the relays publish each outbox again from the top and
every consumer's inbox drops what it already applied, so a ``kill -9`` loses no committed event
and applies none twice.
"""
