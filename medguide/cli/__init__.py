"""The ``medguide`` command line."""
