"""Fixtures every test tree shares (the demo site), and the check that no test leaves an agent
running; they live in firmware/tests/site_fixtures.py and firmware/tests/agent_leaks.py."""

pytest_plugins = ["site_fixtures", "agent_leaks"]
