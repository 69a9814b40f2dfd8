"""The embedded DuckDB file: schema, rows, the writer, recovery and the archive reader."""
