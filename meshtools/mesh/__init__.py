"""The mesh as a whole, for the porcelain (meshctl init, down, status): boot, stop, health."""
