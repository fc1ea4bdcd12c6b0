"""Postprocessing: keep only the largest connected component of labels or regions where cross-validation
shows that this helps (``decision``), and apply such a decision to label maps and folders (``apply``)."""
