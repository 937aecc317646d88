"""The live dashboard's data: sources (each a small module, pure parsing and deciding with
the I/O at the edge), the collector that runs them on their own cadences, and the pure
helpers the renderer shares (spark)."""
