"""The mesh as a whole: boot it, stop it, tell how it is (the porcelain's library)."""
