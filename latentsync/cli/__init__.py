"""The command line, `python -m latentsync COMMAND`; nothing in the library imports it."""
