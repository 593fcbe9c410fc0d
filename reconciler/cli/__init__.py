"""The command line: parse arguments, call the library, render results. Nothing else."""
