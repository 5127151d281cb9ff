"""Loaders: files on disk (model registry, instrument master, risk TOML) into typed config."""
