"""Data: datasets, multi-resolution transforms and loaders, the built-in synthetic images."""
