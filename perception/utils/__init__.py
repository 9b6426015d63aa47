"""Utilities shared by every layer of the package (bottom layer: imports only the standard
library, numpy and torch, never another ``perception`` subpackage)."""
