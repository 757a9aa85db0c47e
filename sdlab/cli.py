"""`sdlab` command line: `sdlab train-toy`, `sdlab finetune`, `sdlab figures`, `sdlab colab`.

Each subcommand owns its argument parser in its own module; this file only dispatches.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "train-toy": ("sdlab.toymodel.train", "Train the shipped toy Stable Diffusion on the toy world."),
    "finetune": ("sdlab.finetune.cli", "Finetune a pipeline on a captioned image dataset."),
    "figures": ("sdlab.figures", "Run every notebook headless and write figures/."),
    "colab": ("sdlab.colab", "Point every notebook's Colab badge and install cell at a GitHub repository."),
}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        lines = [f"  {name:<10} {doc}" for name, (_, doc) in COMMANDS.items()]
        print("usage: sdlab COMMAND [options]\n\ncommands:\n" + "\n".join(lines))
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nsdlab: unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return module.main(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
