"""``clip-hybrid``'s entry point: parse, set the process up, run one subcommand, exit.

Exit codes: 0 success (also when some files were skipped and reported), 2 usage errors,
1 anything else, with a one-line message on stderr that names command-line flags (after
the traceback, keys masked, with --debug).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from . import output, quiet
from .commands import UsageError, run_eval, run_index, run_search, run_serve
from .parser import build_parser, parse_branches


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on usage errors
    # Progress bars go to stderr, only when it is a terminal (and never mixed into --json
    # runs whose stderr is piped): decided before anything else touches stderr.
    progress = sys.stderr.isatty() and not getattr(args, "no_progress", False)
    own_process = argv is None  # run as the clip-hybrid program, not main() from Python
    if own_process:
        quiet.quiet(args.debug)
    else:
        quiet.configure_logging(args.debug)
    from ..options import OptionError

    try:
        return _dispatch(args, progress=progress, own_process=own_process)
    except (UsageError, OptionError) as exc:
        if args.debug and isinstance(exc, OptionError):
            _print_traceback()
        parser.print_usage(sys.stderr)
        output.error(_message(exc))
        return 2
    except KeyboardInterrupt:
        print(
            "clip-hybrid: interrupted; what was written is kept, run again to finish.",
            file=sys.stderr,
        )
        return 130
    except Exception as exc:
        if args.debug:
            _print_traceback()
        output.error(_message(exc))
        return 1
    finally:
        if own_process:
            quiet.release()


def _dispatch(args: object, *, progress: bool, own_process: bool) -> int:
    command = getattr(args, "command", "")
    if command == "index":
        if own_process:
            # The process is the program's own: keep less freed memory over a long
            # ingestion (memory.py). A Python caller passing argv keeps its settings.
            from ..memory import limit_memory_retention

            log = logging.getLogger("llama_index.packs.clip_hybrid.cli")
            log.debug("memory: %s", ", ".join(limit_memory_retention()))
        return run_index(args, progress=progress)  # type: ignore[arg-type]
    if command == "search":
        try:
            branches = parse_branches(getattr(args, "branches", None))
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        return run_search(args, branches)  # type: ignore[arg-type]
    if command == "eval":
        return run_eval(args)  # type: ignore[arg-type]
    return run_serve(args)  # type: ignore[arg-type]


def _print_traceback() -> None:
    """The traceback of the exception being handled (--debug), with keys masked: an API
    error can echo the key it was sent."""
    import traceback

    from ..redaction import redact

    sys.stderr.write(redact(traceback.format_exc()))


def _message(exc: BaseException) -> str:
    """An exception as one line for the command line: flags instead of Python arguments."""
    from ..options import ClipHybridError

    if isinstance(exc, ClipHybridError):
        return exc.for_cli()
    return str(exc) or type(exc).__name__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
