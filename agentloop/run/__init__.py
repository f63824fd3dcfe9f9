"""Running one task: the loop, the session around it, the model, the prompts, the read-only tools."""
