"""ml_collections configs: each file's docstring gives the command that runs it and what it reaches."""
