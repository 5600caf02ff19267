"""Ignite handlers and the workflow functions that hemwsl's MONAI bundles call."""
