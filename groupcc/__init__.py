"""groupcc: group representation theory, dictionaries and group crosscoders for interpretability."""
