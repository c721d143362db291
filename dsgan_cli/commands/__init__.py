"""One module per subcommand (prepare, degrade, pairs, eval, demo, import), called by the CLI."""
