"""The registration panel: fixed/moving/labels, a model or SimpleITK, the overlay layers."""
