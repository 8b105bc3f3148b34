"""The `keras-robust` command line.

`parser` builds the arguments and `checks` validates them, both without
TensorFlow, so `--help` and mistakes answer at once; `commands` runs the
chosen command, importing TensorFlow only then.
"""

import contextlib
import logging
import os
import sys
import warnings

from keras_robust.cli.checks import check_arguments
from keras_robust.cli.parser import build_parser, command_of


def main(argv=None):
    """Entry point of the `keras-robust` console script; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(with_serve_limits=command_of(argv) == "serve")
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        check_arguments(args)
    except (ValueError, OSError) as error:
        return _fail(args, error)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _quiet_native_logs(not args.verbose):
        if not args.verbose:
            # tf2onnx and TensorFlow warn about their own internals, which users cannot act on.
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.formatwarning = _one_line
        from keras_robust.cli.commands import COMMANDS

        if not args.verbose:
            logging.getLogger("tensorflow").setLevel(logging.ERROR)
        try:
            return COMMANDS[args.command](args)
        except (ValueError, RuntimeError, OSError) as error:
            return _fail(args, error)


def _one_line(message, category, filename, lineno, line=None):
    """A warning as the line a user reads (`--verbose` keeps Python's source lines)."""
    return f"keras-robust: note: {message}\n"


def _fail(args, error):
    print(f"keras-robust {args.command}: error: {error}", file=sys.stderr)
    return 1


@contextlib.contextmanager
def _quiet_native_logs(enabled):
    """Sends native (C++) writes to stderr to /dev/null while Python's stay visible.

    TensorFlow and XLA log start-up lines (CUDA probing, oneDNN, CPU features)
    from C++ straight to file descriptor 2, past `TF_CPP_MIN_LOG_LEVEL`. Python
    code (errors, warnings, progress bars) keeps writing to the terminal through
    a duplicate of the original descriptor. Only done when stderr is the real
    one, so test harnesses that capture it see everything.
    """
    if not enabled or sys.stderr is not sys.__stderr__:
        yield
        return
    sys.stderr.flush()
    original = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)
    python_stderr = sys.stderr
    sys.stderr = open(original, "w", buffering=1, closefd=False)
    try:
        yield
    finally:
        sys.stderr.flush()
        sys.stderr = python_stderr
        os.dup2(original, 2)
        os.close(original)
