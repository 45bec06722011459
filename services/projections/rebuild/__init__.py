"""Rebuilding the read models from the beginning into fresh tables, then switching to them."""
