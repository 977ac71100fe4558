"""Distillation: data sets, students, training and evaluation (run in child processes)."""
