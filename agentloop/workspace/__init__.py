"""Where the model's code runs: the git tree, its isolation and write-back, the sandbox, the checks,
their grading, and the guard over protected files."""
