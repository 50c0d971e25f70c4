"""The SyncNet metric: SyncNet and S3FD, face crops for scoring, LSE-C / LSE-D / offset, plots."""
