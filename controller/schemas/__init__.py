"""Typed models for every boundary: alerts in, policies, decisions and triggers out.

Pure pydantic: nothing here imports other controller modules, HTTP, kopf or the store.
"""
