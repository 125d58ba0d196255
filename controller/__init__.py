"""The central Sluice controller (not built yet: see issue 5)."""
