"""The sections of the config schema, one file per meaning; `Config` (config/schema.py) holds them all."""
