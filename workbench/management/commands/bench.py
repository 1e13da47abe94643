"""`python manage.py bench SCENARIO`: measure Workbench on this machine against a bare floor.

Each scenario builds its own data in a database of its own (`workbench_bench_<pid>`, dropped
at the end) and uses a Redis prefix of its own, so neither the demo data nor a running dev
server is touched. It prints a table; with --json the last line of stdout is one JSON object
of the figures (what `tests/bench` and CI read).
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from workbench.bench import audience, cases, console, dispatch, http, ingest, realtime, timeline
from workbench.bench.common import stop_on_sigterm

SCENARIOS = (
    "http", "realtime", "timeline", "cases", "ingest", "audience", "dispatch", "console",
)  # fmt: skip


class Command(BaseCommand):
    help = (
        "Benchmark a scenario on its own database: `http` (sign-in page and /healthz against a "
        "bare ASGI floor), `realtime` (websocket delivery latency and loss, per channel layer), "
        "`timeline` (customer page, keyset paging and search on 1M customers / 5M interactions), "
        "`cases` (case view, queue page and take-next over 200,000 open cases), `ingest` (20,000 "
        "inbound webhook requests over email, Meta and X, 20% repeats) or `audience` (preflight "
        "and materialisation of a campaign over 1M customers, against a SQL floor and a loop) or "
        "`console` (the CCO dashboard over 90 days of 5M interactions, its rollups and the "
        "nightly engagement job)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("scenario", choices=SCENARIOS)
        parser.add_argument(
            "--scale",
            choices=("small", "full"),
            default="full",
            help="small: a smoke test in under a minute; full: the real size (default)",
        )
        parser.add_argument(
            "--json",
            action="store_true",
            dest="as_json",
            help="end stdout with one line of JSON figures",
        )
        parser.add_argument(
            "--layer",
            action="append",
            choices=realtime.LAYERS,
            help="realtime: the channel layer(s) to measure (default: both, to compare)",
        )
        parser.add_argument(
            "--rate",
            type=float,
            help="realtime: events published per second (default: 10 small, 1 full)",
        )
        parser.add_argument(
            "--processes",
            type=count,
            help="ingest: web server processes posting the requests (default: 2)",
        )
        parser.add_argument(
            "--threads",
            type=count,
            help="ingest: threads per process, each with its own connection (default: 2)",
        )

    def handle(self, *args, scenario: str, scale: str, as_json: bool, layer, rate, **options):
        stop_on_sigterm()
        if scenario != "realtime" and (layer or rate is not None):
            raise CommandError("--layer and --rate apply to the realtime scenario only")
        processes, threads = options["processes"], options["threads"]
        if scenario != "ingest" and (processes or threads):
            raise CommandError("--processes and --threads apply to the ingest scenario only")
        if scenario == "http":
            figures, report = http.run(scale=scale)
        elif scenario == "timeline":
            figures, report = timeline.run(scale=scale)
        elif scenario == "cases":
            figures, report = cases.run(scale=scale)
        elif scenario == "audience":
            figures, report = audience.run(scale=scale)
        elif scenario == "ingest":
            figures, report = ingest.run(scale=scale, processes=processes, threads=threads)
        elif scenario == "dispatch":
            figures, report = dispatch.run(scale=scale)
        elif scenario == "console":
            figures, report = console.run(scale=scale)
        else:
            if rate is not None and rate <= 0:
                raise CommandError("--rate must be positive")
            layers = list(dict.fromkeys(layer or realtime.LAYERS))
            figures, report = realtime.run(scale=scale, layers=layers, rate_per_s=rate)
        self.stdout.write(report)
        if as_json:
            self.stdout.write(json.dumps(figures, sort_keys=True, separators=(",", ":")))
        if figures.get("failed"):
            # Figures of what did run are printed above; the exit status still says it failed.
            raise CommandError(f"the run failed for: {', '.join(figures['failed'])}")


def count(value: str) -> int:
    """1 to 64 (argparse names this function in its error: "invalid count value")."""
    number = int(value)
    if not 1 <= number <= 64:
        raise ValueError(value)
    return number
