"""Numbers about a prediction: label-free scores (no labels), registration scores, and the
metrics that need reference labels (Dice, HD95, ASSD)."""
