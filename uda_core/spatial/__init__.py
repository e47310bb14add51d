"""Displacement fields on 2D slices: warping, composing, Jacobians, smooth random fields and
their inverses, quantisation into displacement labels, and the classical B-spline baseline."""
