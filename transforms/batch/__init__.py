"""The batch composites (Beam): parse, shuffle by shard, silver, gold."""
