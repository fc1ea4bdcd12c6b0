"""Reading and writing images, dataset descriptions, box files; verification of raw datasets."""
