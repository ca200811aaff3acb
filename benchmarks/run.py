#!/usr/bin/env python3
"""`make bench`: how fast the toolkit is on the lab (issue 13's five figures and the ratio).

    .venv/bin/python benchmarks/run.py [--batch 100] [--serial-sample 10] [--audit-sites 1000]
                                       [--runs 3] [--cli-runs 10] [--json]

It works in a throwaway state home of its own (PROVISIONER_HOME in a temporary
directory, with its own configuration file) and removes every site it made at the
end, also when it fails or is interrupted. Requests go through the SOP as an
office's would: submitted, the human steps recorded, then approved.

1. one request from approval to verified plus its letter: the decision recorded and the
   approval hook run (provision, verify, letter), one request at a time;
2. B approved requests in one `provision hosting --apply` through the SOP, and the same
   work one by one (the approval hook per request) side by side, as a ratio;
3. `provision audit` over A recorded sites (the sites are made with the batch);
4. `provision hosting --apply` again for the B: a no-change rerun;
5. `provision --version` and `provision --help`, and the listing commands on that state.
Then where the batch's time went, from the saga's events in the state database.
See docs/benchmarks.md.
"""

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path

import figures

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "tarakan-simkes.yaml"
# The steps people record before the decision, by the role that records each (sop/hosting.yaml).
HUMAN_STEPS = [("agenda", "bagian_umum"), ("disposisi", "kadis"), ("pengkajian", "bidang_aplikasi")]
# Pebble, the lab's ACME server, limits nothing; the toolkit's own count of the CA's weekly
# limit (provisioner/issuance_limit.py) would stop the benchmark's office after 50 certificates.
WEEKLY_LIMIT = 100000
REMOVAL_CHUNK = 100


def say(text: str) -> None:
    """Progress goes to stderr, so `--json` leaves stdout to the figures."""
    print(text, file=sys.stderr, flush=True)


def options(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=100, metavar="B",
                        help="approved requests in the batch (figures 2 and 4; default 100)")
    parser.add_argument("--serial-sample", type=int, default=10, metavar="K",
                        help="requests done one by one for figure 2, scaled to B (default 10; B measures all)")
    parser.add_argument("--audit-sites", type=int, default=1000, metavar="A",
                        help="recorded sites the audit reads (figure 3; default 1000)")
    parser.add_argument("--audit-batch", type=int, default=100, metavar="N",
                        help="sites per batch when making the audit's sites (default 100)")
    parser.add_argument("--runs", type=int, default=3, metavar="N",
                        help="runs whose median figures 1, 3 and 4 are (default 3)")
    parser.add_argument("--cli-runs", type=int, default=10, metavar="N",
                        help="runs whose median figure 5 is (default 10)")
    parser.add_argument("--inventory", type=Path, metavar="DIR",
                        help="provision on this inventory instead of the lab's (one web server, say)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    for name in ("batch", "serial_sample", "audit_sites", "audit_batch", "runs", "cli_runs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.serial_sample > args.batch:
        parser.error(f"--serial-sample ({args.serial_sample}) must be at most --batch ({args.batch})")
    return args


def machine() -> dict:
    """What the figures were measured on."""
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    memory_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                     if line.startswith("MemTotal:"))
    return {"cpu": model, "cores": os.cpu_count(), "memory_gib": round(memory_kb / 1024 ** 2, 1),
            "kernel": platform.release(), "python": platform.python_version()}


class Office:
    """The benchmark's office: its state home, configuration, engine and hosting."""

    def __init__(self, home: Path, inventory: Path | None = None):
        self.home = home
        self.config_file = home / "provisioner.yaml"
        # Only the CA limit (and an inventory if given) differs from the built-in defaults.
        self.config_file.write_text(f"hosting:\n  acme:\n    weekly_limit: {WEEKLY_LIMIT}\n"
                                    + (f"  inventory: {json.dumps(str(inventory.resolve()))}\n" if inventory else ""))
        os.environ.update(PROVISIONER_HOME=str(home), PROVISIONER_CONFIG=str(self.config_file))
        os.environ.pop("PROVISIONER_STATE_URL", None)
        os.environ.pop("PROVISIONER_FAULT", None)

        from provisioner.config import load_config
        from provisioner.errors import Waiting
        from provisioner.hosting import Hosting
        from provisioner.sop.engine import Engine
        from provisioner.sop.hooks import ACTIONS
        from provisioner.store import open_store

        self.config = load_config()
        self.store = open_store(self.config.resolved_state_url())
        self.engine = Engine(self.config, self.store)  # the approval hook as an office runs it

        def left_to_the_batch(ctx):
            raise Waiting("provisioning is left to the batch (`provision hosting --apply`)")

        # Approvals for the batch: the decision recorded and the provisioning step left waiting,
        # as it is when approvals come in before the batch that provisions them.
        deferred = ACTIONS.copy()
        deferred.register("provision_site", left_to_the_batch, replace=True)
        self.deferring = Engine(self.config, self.store, actions=deferred)
        self.hosting = Hosting(self.config, self.store, source="cli")
        self.template = EXAMPLE.read_text()
        self.run = uuid.uuid4().hex[:6]  # in every label: names from an earlier run never clash
        self.count = 0

    def cli(self, *args: str, log: str) -> tuple[int, float]:
        """`provision ARGS` in the office's home; (exit code, seconds). Output goes to the log."""
        command = [str(Path(sys.executable).parent / "provision"), *args]
        with open(self.home / log, "a") as out:
            out.write(f"$ provision {' '.join(args[:8])}{' ...' if len(args) > 8 else ''}\n")
            out.flush()
            start = time.perf_counter()
            done = subprocess.run(command, cwd=self.home, stdout=out, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)
            return done.returncode, time.perf_counter() - start

    def tail(self, log: str, lines: int = 30) -> str:
        return "\n".join((self.home / log).read_text(errors="replace").splitlines()[-lines:])

    def reviewed(self, n: int) -> list[str]:
        """n new requests, submitted and through the human steps up to the decision."""
        ids = []
        year = date.today().year
        for _ in range(n):
            self.count += 1
            request_id = f"BEN-{year}-{self.count:04d}"
            text = self.template.replace("id: HST-2024-0007", f"id: {request_id}").replace(
                "  subdomain: simkes", f"  subdomain: bn{self.run}{self.count:04d}")
            path = self.home / "requests" / f"{request_id}.yaml"
            path.parent.mkdir(exist_ok=True)
            path.write_text(text)
            self.engine.submit(path.read_bytes(), str(path))
            for step, role in HUMAN_STEPS:
                self.engine.record_step(request_id, step, role)
            ids.append(request_id)
        return ids

    def approve(self, request_id: str, hook: bool = True):
        engine = self.engine if hook else self.deferring
        return engine.decide(request_id, True, engine.decision_role(request_id))

    def fqdn(self, request_id: str) -> str:
        from provisioner.store.models import RequestRow

        with self.store.session() as session:
            return session.get(RequestRow, request_id).fqdn

    def unfinished(self, request_ids: list[str]) -> list[str]:
        """The requests whose site is not provisioned or whose letter was not issued."""
        from sqlalchemy import select

        from provisioner.store.models import Event, RequestRow, SiteRow

        with self.store.session() as session:
            lettered = set(session.scalars(select(Event.request_id).where(
                Event.kind == "letter_issued", Event.request_id.in_(request_ids))))
            bad = []
            for request_id in request_ids:
                site = session.get(SiteRow, session.get(RequestRow, request_id).fqdn)
                if site is None or site.state != "provisioned" or request_id not in lettered:
                    bad.append(f"{request_id} ({site.state if site else 'no site'}: {site.reason if site else ''}"
                               f"{'' if request_id in lettered else '; no letter'})")
            return bad

    def marks(self, request_ids: list[str], since) -> list[figures.Mark]:
        from sqlalchemy import select

        from provisioner.store.models import Event

        with self.store.session() as session:
            rows = session.scalars(select(Event).where(Event.request_id.in_(request_ids), Event.at >= since))
            return [figures.Mark(e.kind, e.at, (e.payload or {}).get("step"), (e.payload or {}).get("fqdn"))
                    for e in rows]

    def saga_steps_since(self, request_ids: list[str], since) -> int:
        from sqlalchemy import func, select

        from provisioner.store.models import Event

        with self.store.session() as session:
            return session.scalar(select(func.count()).select_from(Event).where(
                Event.kind == "saga_intent", Event.request_id.in_(request_ids), Event.at >= since))

    def counts(self) -> tuple[int, int, int]:
        """Requests, sites and requests not done in the state database."""
        from sqlalchemy import func, select

        from provisioner.store.models import RequestRow, SiteRow

        with self.store.session() as session:
            return (session.scalar(select(func.count()).select_from(RequestRow)),
                    session.scalar(select(func.count()).select_from(SiteRow)),
                    session.scalar(select(func.count()).select_from(RequestRow).where(RequestRow.state != "done")))

    def live(self) -> list[str]:
        from sqlalchemy import select

        from provisioner.store.models import SiteRow

        with self.store.session() as session:
            return list(session.scalars(select(SiteRow.fqdn).where(SiteRow.state != "removed")))

    def remove_all(self) -> list[str]:
        """Remove every site the benchmark made, a batch at a time (one run per host per batch);
        a batch that stops is retried site by site, so one broken site keeps only itself.
        Returns what could not be removed."""
        live = self.live()
        for start in range(0, len(live), REMOVAL_CHUNK):
            chunk = live[start:start + REMOVAL_CHUNK]
            try:
                self.hosting.remove(chunk, reason="benchmark")
            except Exception as err:  # noqa: BLE001 - retried one by one below, where it shows
                say(f"  removal of {len(chunk)} sites stopped ({err}); removing them one by one")
                for fqdn in chunk:
                    try:
                        self.hosting.remove([fqdn], reason="benchmark")
                    except Exception as one:  # noqa: BLE001 - reported with the sites left
                        say(f"  {fqdn}: {one}")
        return self.live()

    def close(self) -> None:
        self.store.close()


def hosting_supports_all_approved(office: Office) -> bool:
    command = [str(Path(sys.executable).parent / "provision"), "hosting", "--help"]
    return "--all-approved" in subprocess.run(command, capture_output=True, text=True).stdout


def batch_through_sop(office: Office, ids: list[str], all_approved: bool, log: str) -> float:
    """The requests, approved and waiting on provisioning, in one `provision hosting --apply`."""
    args = ["hosting", "--all-approved", "--apply"] if all_approved else ["hosting", *ids, "--apply"]
    rc, seconds = office.cli(*args, log=log)
    bad = office.unfinished(ids)
    if rc != 0 or bad:
        raise RuntimeError(f"the batch of {len(ids)} exited {rc}; unfinished: {', '.join(bad[:10]) or 'none'}\n"
                           + office.tail(log))
    return seconds


# Listings of the office's state after figure 3 (every request and site the benchmark made). The
# first reads all requests and prints none (no request is rejected here): its time is the start-up
# and the query, judged against the target; the others print every row. What each one covers,
# from (requests, sites, open requests).
LISTINGS = (
    ("cli_listing", "request list --state rejected", lambda r, s, o: f"reads {r:,} requests, prints none"),
    ("cli_request_list", "request list", lambda r, s, o: f"a table of {r:,} requests"),
    ("cli_site_list", "site list", lambda r, s, o: f"a table of {s:,} sites"),
    ("cli_sla", "sla --json", lambda r, s, o: f"the schedules of {o:,} open requests"),
)


def _median_cli(args, office: Office, command: tuple[str, ...], log: str) -> float:
    times = []
    for _ in range(args.cli_runs):
        rc, seconds = office.cli(*command, log=log)
        if rc != 0:
            raise RuntimeError(f"`provision {' '.join(command)}` exited {rc}\n" + office.tail(log))
        times.append(seconds)
    return figures.median(times)


def cli_startup(args, office: Office) -> list[figures.Figure]:
    """Figure 5: the console script as a user starts it, median of --cli-runs each."""
    found = [figures.Figure(key, f"5. provision {flag}", _median_cli(args, office, (flag,), "cli.log"),
                            f"median of {args.cli_runs}")
             for key, flag in (("cli_version", "--version"), ("cli_help", "--help"))]
    counts = office.counts()
    for key, command, covers in LISTINGS:
        found.append(figures.Figure(key, f"5. provision {command}",
                                    _median_cli(args, office, tuple(command.split()), "cli.log"),
                                    f"median of {args.cli_runs}; {covers(*counts)}"))
    return found


def measure(args, office: Office, results: dict, found: list[figures.Figure]) -> None:
    """Run the figures in order, adding each to `found` as it is measured."""
    from provisioner.sop.sla import utcnow

    timings = results["timings"]

    # 1 and the one-by-one half of 2: each request approved and run by the hook alone.
    one_by_one = max(args.runs, args.serial_sample)
    say(f"one by one: {one_by_one} requests, each approved and provisioned by the approval hook")
    times = []
    for request_id in office.reviewed(one_by_one):
        start = time.perf_counter()
        office.approve(request_id)
        times.append(time.perf_counter() - start)
        bad = office.unfinished([request_id])
        if bad:
            raise RuntimeError(f"one by one: {bad[0]}")
        say(f"  {office.fqdn(request_id)}: {times[-1]:.2f} s")
    timings["one_by_one"] = times
    found.append(figures.Figure("approval", "1. one approval -> verified site + letter",
                                figures.median(times[:args.runs]), f"median of {args.runs}"))
    serial = figures.scale(sum(times[:args.serial_sample]), args.serial_sample, args.batch)

    # 2: the batch through the SOP.
    all_approved = hosting_supports_all_approved(office)
    say(f"batch: {args.batch} requests approved, then one `provision hosting "
        f"{'--all-approved' if all_approved else 'ID...'} --apply`")
    batch_ids = office.reviewed(args.batch)
    for request_id in batch_ids:
        office.approve(request_id, hook=False)
    since = utcnow()
    batch = batch_through_sop(office, batch_ids, all_approved, "batch.log")
    say(f"  {args.batch} sites in {batch:.2f} s")
    timings["batch"] = batch
    found.append(figures.Figure("batch", f"2. batch of {args.batch} through the SOP", batch,
                                "one `provision hosting --apply`", size=args.batch))
    found.append(figures.Figure("serial", "   the same one by one", serial.seconds, serial.text(),
                                size=args.batch))
    found.append(figures.Figure("batch_ratio", "   batch vs one by one", figures.ratio(serial.seconds, batch),
                                "side by side, this run", size=args.batch, ratio=True))
    results["profile"] = figures.profile(office.marks(batch_ids, since))
    results["batch_command"] = batch

    # 4 (before the audit's sites exist, so it reads what the batch made): a no-change rerun.
    say(f"rerun: `provision hosting ID... --apply` for the {args.batch} again, {args.runs} times")
    times = []
    for _ in range(args.runs):
        since = utcnow()
        rc, seconds = office.cli("hosting", *batch_ids, "--apply", log="rerun.log")
        if rc != 0:
            raise RuntimeError(f"the rerun exited {rc}\n" + office.tail("rerun.log"))
        changed = office.saga_steps_since(batch_ids, since)
        if changed:
            raise RuntimeError(f"the rerun changed something ({changed} saga steps ran)\n" + office.tail("rerun.log"))
        times.append(seconds)
        say(f"  {seconds:.2f} s, nothing changed")
    timings["rerun"] = times
    rerun = figures.Figure("rerun", f"4. no-change rerun of the {args.batch}", figures.median(times),
                           f"median of {args.runs}", size=args.batch)

    # 3: the audit over A recorded sites; the missing ones are made with the batch.
    missing = args.audit_sites - len(office.live())
    start = time.perf_counter()
    if missing > 0:
        say(f"audit set-up: {missing} more sites, {args.audit_batch} per batch")
    while missing > 0:
        ids = office.reviewed(min(args.audit_batch, missing))
        for request_id in ids:
            office.approve(request_id, hook=False)
        chunk = time.perf_counter()
        # The batch itself (Hosting.apply): the audit needs recorded sites, not their letters.
        office.hosting.apply(ids)
        missing -= len(ids)
        say(f"  {len(ids)} sites in {time.perf_counter() - chunk:.1f} s ({missing} to go)")
    setup = time.perf_counter() - start
    timings["audit_setup"] = setup
    recorded = len(office.live())
    say(f"audit: `provision audit` over {recorded} recorded sites, {args.runs} times")
    times, verdicts = [], []
    for _ in range(args.runs):
        rc, seconds = office.cli("audit", "--format", "json", log="audit.log")
        if rc not in (0, 1):  # 1: drift found, still a full audit
            raise RuntimeError(f"the audit exited {rc}\n" + office.tail("audit.log"))
        times.append(seconds)
        verdicts.append("clean" if rc == 0 else "drift")
        say(f"  {seconds:.2f} s ({verdicts[-1]})")
    timings["audit"] = times
    found.append(figures.Figure("audit", f"3. provision audit, {recorded:,} sites", figures.median(times),
                                f"median of {args.runs} ({', '.join(sorted(set(verdicts)))}); "
                                f"set-up {setup:.0f} s", size=recorded))
    found.append(rerun)
    found += cli_startup(args, office)


def report(args, results: dict, found: list[figures.Figure]) -> str:
    facts = results["machine"]
    lines = [f"provisioner benchmark on the lab: {facts['cpu']}, {facts['cores']} cores, "
             f"{facts['memory_gib']} GiB, Linux {facts['kernel']}, Python {facts['python']}",
             f"options: --batch {args.batch} --serial-sample {args.serial_sample} --audit-sites "
             f"{args.audit_sites} --runs {args.runs} --cli-runs {args.cli_runs}"
             + (f" --inventory {args.inventory}" if args.inventory else ""),
             f"CA weekly limit raised to {WEEKLY_LIMIT} in this office's configuration "
             "(the lab's ACME server, Pebble, has none)", ""]
    text = "\n".join(lines) + figures.render(found)
    if "profile" in results:
        text += f"\nwhere the batch's time went (events of the {args.batch} requests):\n"
        text += results["profile"].render(results.get("batch_command"))
    if "removal" in results:
        text += f"\nremoval of the {results['removal']['sites']} sites afterwards: {results['removal']['seconds']:.1f} s\n"
    return text


def main(argv=None) -> int:
    args = options(argv)
    from provisioner.errors import ProvisionerError
    from provisioner.lab import guard, topology

    try:
        guard.require_lab_route(topology.primary_ns().address)
    except ProvisionerError as err:
        say(f"error: {err}")
        return 3

    def stop(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")  # unwinds to the removal below

    signal.signal(signal.SIGTERM, stop)
    home = Path(tempfile.mkdtemp(prefix="provisioner-bench-"))
    results: dict = {"machine": machine(), "timings": {}}
    say(f"state home {home}; CA weekly limit raised to {WEEKLY_LIMIT} there (Pebble has none)")
    office = Office(home, args.inventory)
    found, failed, made = [], None, 0
    try:
        measure(args, office, results, found)
    except BaseException as err:  # noqa: BLE001 - the sites are removed whatever stopped the run
        failed = err
    finally:
        say("removing every site the benchmark made")
        start = time.perf_counter()
        try:
            made = len(office.live())
            left = office.remove_all()
        except BaseException as err:  # noqa: BLE001 - the state home is kept to finish by hand
            left = [f"the removal stopped: {type(err).__name__}: {err}"]
        results["removal"] = {"sites": made, "seconds": time.perf_counter() - start}
        office.close()
        if left:
            say(f"NOT removed: {', '.join(left[:20])}{' ...' if len(left) > 20 else ''}\n"
                f"the state home {home} is kept: remove them with PROVISIONER_HOME={home} "
                f"PROVISIONER_CONFIG={office.config_file} provision site remove FQDN --apply")
        else:
            shutil.rmtree(home, ignore_errors=True)  # it holds the sites' passwords
    if failed is not None:
        if isinstance(failed, KeyboardInterrupt):
            say("interrupted")
            return 130
        say(f"error: {type(failed).__name__}: {failed}")
        if found:
            say("measured before it stopped:\n" + figures.render(found))
        return 1
    if args.json:
        print(json.dumps({"machine": results["machine"], "options": vars(args), "ca_weekly_limit": WEEKLY_LIMIT,
                          "figures": [f.as_dict() for f in found],
                          "profile": results["profile"].as_list() if "profile" in results else [],
                          "timings": results["timings"], "removal": results["removal"]}, indent=2, default=str))
    else:
        print(report(args, results, found), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
