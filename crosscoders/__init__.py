"""Dictionary models (SAE, group crosscoder), their losses and save/load. May import torch and `groups`."""
