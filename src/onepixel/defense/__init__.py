"""Defence: VAE detector (paper 001), anomaly scores, residual baseline, guarded targets."""
