"""meshtools: small composable commands that run a mesh of parallel coding agents."""

__version__ = "0.1.0"
