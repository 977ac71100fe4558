"""Shipped configuration files (package data): default.yaml is copied on first run."""
