"""Distillation: data sets, training and calibration (run in child processes); students are
calibrated through `service`'s answering path, exactly as they will serve."""
