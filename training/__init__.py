"""Composer models and training, activation harvesting and the dictionary trainer. May import torch, `groups`, `crosscoders`."""
