"""HTTP: the app factory, routes, error mapping, observability, the process runner."""
