"""One module per store; AgentMemory composes them."""
