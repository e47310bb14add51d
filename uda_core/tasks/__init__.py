"""What the engine adapts on: a task samples batches, scores the network without labels and
says when a prediction collapsed (segmentation: target slices; registration: image pairs)."""
