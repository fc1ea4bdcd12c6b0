"""Thin command-line entry points: parse arguments, call one library function, report errors clearly."""
