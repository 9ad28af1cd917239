"""Offline pipelines: data preparation, reward-model training and evaluation. Imports prefrank, never the reverse."""
