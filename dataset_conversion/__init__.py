"""Converters from public dataset layouts into boxunet raw datasets, and labels -> boxes."""
