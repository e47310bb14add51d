"""Widgets both panels use: settings forms, live curves, file lists."""
