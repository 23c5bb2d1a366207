"""Run assembly: a typed configuration (config.py), the scales (recipes.py), network weights
(weights.py) and the builder that turns a configuration into a trained run (build.py)."""
