"""Training AVSyncD's added layers: data pipeline and training entry point."""
