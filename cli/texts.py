"""What the `orchestra` command says in the terminal (besides event lines, see cli.render)."""
from __future__ import annotations

VALID = "ok: {path}: {summary}"
INFERRED = "no {filename} in {repo}; inferred defaults: {summary}"
INVALID = "{count} problem(s) in {path}; fix them and run `orchestra validate` again"
NO_SUCH_PATH = "{path}: no such file or directory"
