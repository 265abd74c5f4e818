"""The Delta lake: tables, data files, atomic commits, landing files, silver's merge, erasure."""
