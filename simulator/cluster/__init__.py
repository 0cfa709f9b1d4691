"""The cluster model: specs, the built-in families, cluster files and routes.

Importable without simpy: placement and the CLI use it without the discrete-event engine.
"""
