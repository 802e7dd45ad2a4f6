"""Fixtures every test tree shares (the demo site); they live in firmware/tests/site_fixtures.py."""

pytest_plugins = ["site_fixtures"]
