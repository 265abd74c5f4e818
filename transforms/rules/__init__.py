"""The rules, with no Beam and no I/O: each rule's per-row form and its Arrow form side by side."""
