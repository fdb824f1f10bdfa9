"""The command line, run configuration and the stages of a run."""
