"""Volume <-> model grid: preparing a volume for a network (canonical orientation, model
spacing, normalised slices and their positions), mapping outputs back to the input grid, and
co-registering a subject's images."""
