"""The agent process: one asyncio supervisor running the appliance's services."""
