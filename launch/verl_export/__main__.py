"""``python -m launch.verl_export [--config X] [--out DIR] [--launch] [overrides]``: ``recrl export verl``
without the rest of the command line."""

import argparse
import sys

from launch.verl_export import add_parser, main

parser = argparse.ArgumentParser(prog="python -m launch.verl_export")
add_parser(parser.add_subparsers(dest="command", required=True))
sys.exit(main(parser.parse_args(["export", "verl", *sys.argv[1:]])))
