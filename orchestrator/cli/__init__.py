"""The resolab command line: every subcommand."""
