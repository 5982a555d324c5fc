"""Integrations of liteq with other frameworks (each an optional extra)."""
