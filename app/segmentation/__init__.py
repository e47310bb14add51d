"""The adaptation panel: model, data, method, run and save boxes."""
