"""Many tasks at once, for people who train models: task files (`tasks`), and the importers that
write them (`swebench`). The batch runner builds on these rows."""
