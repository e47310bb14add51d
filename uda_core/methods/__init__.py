"""Adaptation methods: one module each (a config dataclass, declared data needs, step()).

`uda_core.methods.registry.METHODS` maps command-line names to classes.
"""
