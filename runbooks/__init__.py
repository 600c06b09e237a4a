"""The runbook catalog (YAML data) and its loader; see `runbooks.catalog`."""

from runbooks.catalog import Catalog, InvalidCall, Runbook, default_catalog, load_catalog_from

__all__ = ["Catalog", "InvalidCall", "Runbook", "default_catalog", "load_catalog_from"]
