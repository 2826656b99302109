"""Shared runtime of every fte service."""
