"""Durable pipelines: definitions, the step registry, DBOS workflows and the workers."""
