"""The `clusterkit` command line: a thin layer of I/O over the library."""
