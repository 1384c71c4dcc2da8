"""Analysis of attack runs: chromatic, spatial and periodicity statistics; brute-force confidence maps."""
