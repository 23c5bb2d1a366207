"""The training engine: the loop (trainer.py), evaluation metrics (metrics.py), and seeds,
devices and distributed set-up (runtime.py)."""
