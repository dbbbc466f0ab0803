"""Training, fine-tuning and evaluation of fveseg models (imports only the core `fveseg`)."""
