"""Helper modules for tests/test_cli.py: ``--call`` targets that the real command imports."""
