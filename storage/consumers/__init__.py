"""Kafka consumers of uc-edge events: a reusable idempotent base and the billing consumer."""
