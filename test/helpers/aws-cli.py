"""Runs AWS CLI v2 commands in one Python process, for tests.

Each line on stdin is a JSON array of arguments, as given to `aws`. The command runs through
the driver that /usr/bin/aws itself runs (awscli.clidriver: the same argument parser, request
serializers, HTTP stack and error messages), with its own new driver and session, and one JSON
line comes back on stdout: {"rc": <exit code>, "stdout": ..., "stderr": ...}. The point is
speed: starting the CLI costs about a second of Python imports, paid here once per process
instead of once per command.
"""
import io
import json
import os
import sys
from contextlib import redirect_stderr, redirect_stdout

from awscli.clidriver import create_clidriver

# Answers go to the real stdout; the CLI's own output is captured per command.
answers = os.fdopen(os.dup(sys.stdout.fileno()), "w")

for line in sys.stdin:
    args = json.loads(line)
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            rc = create_clidriver().main(args)
        except SystemExit as stop:
            rc = stop.code if isinstance(stop.code, int) else 1
    answers.write(json.dumps({"rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue()}) + "\n")
    answers.flush()
