"""An argparse parser whose usage errors are one line that points at --help, not the whole usage block.

Shared by ``resolab`` and ``analysis/make_tables.py`` (analysis is the lowest layer both import)."""
from __future__ import annotations

import argparse


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")
