"""Board services and the description of the board the agent runs on."""
