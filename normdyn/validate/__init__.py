"""Torch validation layer: the ELR monitor, architectures, data and runs."""
