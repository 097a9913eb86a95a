"""``python -m rllm.server``: the same as ``rllm serve``."""

import sys

from ..cli import run_subcommand

sys.exit(run_subcommand("serve", prog="python -m rllm.server"))
