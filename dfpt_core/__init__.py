"""dfpt_core: knowledge distillation across a capacity gap (DFPT-KD) as a small PyTorch library."""

__version__ = "0.1.0"
