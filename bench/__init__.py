"""Benchmarks against real RabbitMQ and PostgreSQL (see bench/README.md)."""
