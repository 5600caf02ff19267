"""Class activation maps and gradient attribution methods for the slice classifiers."""
