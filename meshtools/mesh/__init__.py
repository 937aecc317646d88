"""The mesh as a whole: what the porcelain (meshctl init, down, status, execute, ...) does."""
