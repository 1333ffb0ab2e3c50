"""Durable Streams protocol server on Trio."""
