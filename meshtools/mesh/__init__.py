"""The mesh as a whole (the porcelain's library): boot, stop, health."""
