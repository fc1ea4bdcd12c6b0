"""Box geometry, labels -> boxes, and (later) box-to-mask methods."""
