"""The version of the training data (generator + real train-source rules); recorded in every checkpoint."""

DATA_VERSION = "2026.12.2"
