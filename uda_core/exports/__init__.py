"""What a run leaves behind: model bundles with provenance, masks, fields, run.json, the run
report and overlay pictures."""
