"""User-facing text of `orchestra validate`."""
from __future__ import annotations

VALID = "ok: {path}: {summary}"
INFERRED = "no {filename} in {repo}; inferred defaults: {summary}"
INVALID = "{count} problem(s) in {path}; fix them and run `orchestra validate` again"
NO_SUCH_PATH = "{path}: no such file or directory"
