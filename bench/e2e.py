"""End-to-end benchmark of a real gnomon stack (issue 4): 1 API, 1 scheduler, 2 workers on this machine's
PostgreSQL and Redis. Prints submit rate, end-to-end jobs/s (submit -> all `succeeded` with history) and the
lateness of delayed jobs; with --peers, runs the peer harness in the same run and prints it alongside.
With --limits (issue 7), flow control is configured but does not bind: the queue gets max_running and
max_per_second far above what the stack reaches, and the S1 jobs carry concurrency keys (--keys of them) with
limits no key reaches; compare its S1 figure with a run without the flag (bench/README.md, "Flow control").
`--limits keys,running,rate` picks which (all by default).

    python -m bench.e2e [--jobs 20000] [--concurrency 64] [--peers huey dramatiq [--rounds 3]] [--rss-jobs 200000]
                        [--limits]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg

from tests.integration.http_stack import delete_prefix
from tests.integration.processes import GnomonProcess, gnomon_env

BASE = os.environ.get("GNOMON_BENCH_DATABASE_URL", "postgresql://root@127.0.0.1:5432/postgres")
REDIS = os.environ.get("GNOMON_BENCH_REDIS_URL", "redis://127.0.0.1:6379/1")
TOKEN = "bench"
PEERS = Path(os.environ.get("GNOMON_PEERS_DIR", "/tmp/bench-peers"))


def create_database() -> tuple[str, str]:
    name = f"gnomon_bench_{secrets.token_hex(4)}"
    with psycopg.connect(BASE, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = BASE.rsplit("/", 1)[0] + "/" + name
    subprocess.run([sys.executable, "-m", "entrypoints.cli", "migrate", "--database-url", url], check=True,
                   capture_output=True)
    return name, url


def drop_database(name: str) -> None:
    with psycopg.connect(BASE, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_stack(stack: ExitStack, url: str, port: int, concurrency: int, workers: int) -> list[GnomonProcess]:
    prefix = f"bench{secrets.token_hex(3)}"
    env = gnomon_env(url, REDIS, prefix=prefix, api_tokens=TOKEN, port=port, log_format="text")
    stack.callback(delete_prefix, REDIS, prefix)  # last, after the processes: ids re-sent at the end stay otherwise
    procs = [GnomonProcess(["api"], env), GnomonProcess(["scheduler"], env)]
    procs += [GnomonProcess(["worker", "--concurrency", str(concurrency)], env) for _ in range(workers)]
    for p in procs:
        stack.callback(p.close)
        stack.callback(lambda p=p: p.terminate(30) if p.alive() else None)
    for p in procs:
        p.wait_for_log("ready", 30)
    return procs


def submit(client: httpx.Client, jobs: list[dict], chunk: int = 1000) -> list[str]:
    ids: list[str] = []
    for i in range(0, len(jobs), chunk):
        answer = client.post("/v1/jobs/batch", json={"jobs": jobs[i:i + chunk]})
        answer.raise_for_status()
        ids += answer.json()["ids"]
    return ids


def wait_done(url: str, n: int, since: datetime, timeout: float = 900) -> float:
    """Seconds (wall clock) when `n` jobs created since `since` are succeeded AND have their run row.

    Polled cheaply: a poll counts the runs (a scan of one narrow table, a few ms), and the full check, a join
    of every job with its runs (~0.2-0.3 s at 30,000 jobs), runs only once enough runs exist for it to pass.
    Polling the full check every 50 ms kept a PostgreSQL backend busy for the whole wait, about one of the
    machine's two cores, and slowed down what it measured."""
    end = time.time() + timeout
    check_at, done = n, 0
    with psycopg.connect(url, autocommit=True) as conn:
        while time.time() < end:
            started = time.perf_counter()
            runs = conn.execute("SELECT count(*) FROM runs").fetchone()[0]
            if runs >= check_at:
                done = conn.execute("SELECT count(*) FROM jobs j WHERE j.created_at >= %s AND j.state = 'succeeded' "
                                    "AND EXISTS (SELECT 1 FROM runs r WHERE r.job_id = j.id)", (since,)).fetchone()[0]
                if done >= n:
                    return time.time()
                check_at = runs + (n - done)  # not before that many more runs
            time.sleep(max(0.05, 4 * (time.perf_counter() - started)))  # polling stays a small load
    raise TimeoutError(f"only {done} of {n} jobs done")


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


NOT_BINDING = {"running": {"max_running": 1_000_000}, "rate": {"max_per_second": 1_000_000}}  # per queue
KEY_LIMIT = 100_000  # per concurrency key, for --limits keys
LIMITS = ("keys", "running", "rate")


def limit_queue(client: httpx.Client, kinds: set[str], queue: str = "default") -> None:
    settings = {name: value for kind in kinds & set(NOT_BINDING) for name, value in NOT_BINDING[kind].items()}
    if settings:
        client.patch(f"/v1/queues/{queue}", json=settings).raise_for_status()
        time.sleep(1.5)  # every worker reads the queue settings at least once a second


def s1(client: httpx.Client, url: str, n: int, keys: int = 0) -> dict:
    since = datetime.now(UTC) - timedelta(seconds=1)
    jobs = [{"task": "noop", "payload": {"i": i}} for i in range(n)]
    if keys:  # --limits: every job has a key, no key reaches its limit
        jobs = [job | {"concurrency_key": f"tenant-{i % keys}", "concurrency_limit": KEY_LIMIT}
                for i, job in enumerate(jobs)]
    t0 = time.time()
    submit(client, jobs)
    t1 = time.time()
    t2 = wait_done(url, n, since)
    return {"n": n, "submit_s": round(t1 - t0, 3), "submit_rate": round(n / (t1 - t0)),
            "e2e_s": round(t2 - t0, 3), "e2e_rate": round(n / (t2 - t0))}


def s2(client: httpx.Client, url: str, each: int = 2000) -> dict:
    # No margin here: S1's jobs were all created before this instant, and one created less than a second
    # ago (a short S1, e.g. --jobs 5000) would count as an S2 job, end wait_done early and break the figures.
    since = datetime.now(UTC)
    due = datetime.now(UTC) + timedelta(seconds=5)
    burst = [{"task": "noop", "run_at": due.isoformat(), "payload": {"g": "a"}} for _ in range(each)]
    spread = [{"task": "noop", "run_at": (due + timedelta(seconds=10 * i / each)).isoformat(), "payload": {"g": "b"}}
              for i in range(each)]
    submit(client, burst + spread)
    wait_done(url, 2 * each, since, timeout=120)
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT payload->>'g', extract(epoch FROM started_at - run_at) FROM jobs "
                            "WHERE created_at >= %s", (since,)).fetchall()
        last = conn.execute("SELECT extract(epoch FROM max(started_at) - %s) FROM jobs WHERE created_at >= %s "
                            "AND payload->>'g' = 'a'", (due, since)).fetchone()[0]
    lateness = {g: [float(x) for grp, x in rows if grp == g] for g in ("a", "b")}

    def summary(xs: list[float]) -> dict:
        return {"p50_ms": round(pct(xs, .5) * 1000, 1), "p99_ms": round(pct(xs, .99) * 1000, 1),
                "max_ms": round(max(xs) * 1000, 1)}
    return {"burst": summary(lateness["a"]), "spread": summary(lateness["b"]),
            "burst_last_start_ms": round(float(last) * 1000, 1)}


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def pids_of(name: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", name], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def postgres_pids(url: str) -> list[int]:
    """The server processes working for the benchmark: the backends of its database (the stack's pools) and
    the WAL writer, checkpointer and background writer. Other databases' backends are left out: other work
    on a shared machine would otherwise be counted as gnomon's."""
    query = ("SELECT pid FROM pg_stat_activity WHERE (datname = current_database() AND pid <> pg_backend_pid())"
             " OR backend_type IN ('walwriter', 'checkpointer', 'background writer')")
    with psycopg.connect(url, autocommit=True) as conn:
        return [row[0] for row in conn.execute(query).fetchall()]


def cpu_snapshot(procs: list[GnomonProcess], url: str) -> dict[str, float]:
    snap = {"api": cpu_seconds([procs[0].pid]), "scheduler": cpu_seconds([procs[1].pid]),
            "workers": cpu_seconds([p.pid for p in procs[2:]]),
            "postgres": cpu_seconds(postgres_pids(url)), "redis": cpu_seconds(pids_of("redis-server")),
            "bench": cpu_seconds([os.getpid()])}
    return snap


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def rss_run(client: httpx.Client, url: str, workers: list[GnomonProcess], n: int) -> dict:
    since = datetime.now(UTC) - timedelta(seconds=1)
    samples: list[list[int]] = []
    chunk = 10_000
    for _i in range(0, n, chunk):
        submit(client, [{"task": "noop"} for _ in range(chunk)])
        samples.append([rss_kb(w.pid) for w in workers])
    wait_done(url, n, since, timeout=1800)
    samples.append([rss_kb(w.pid) for w in workers])
    return {"n": n, "rss_mb_first": [round(s / 1024, 1) for s in samples[1]],
            "rss_mb_last": [round(s / 1024, 1) for s in samples[-1]]}


def peers(names: list[str]) -> list[dict]:
    if not names:
        return []
    raw = PEERS / "results" / "raw.jsonl"
    before = raw.read_text().count("\n") if raw.exists() else 0
    subprocess.run(["./run_all.sh", "s1", *names], cwd=PEERS, check=False, capture_output=True)
    subprocess.run(["./run_all.sh", "s2", *names], cwd=PEERS, check=False, capture_output=True)
    lines = raw.read_text().splitlines()[before:]
    return [json.loads(line) for line in lines]


def gnomon_round(args: argparse.Namespace, kinds: set[str]) -> dict:
    """One run of gnomon's scenarios on a fresh database and stack."""
    name, url = create_database()
    results: dict = {}
    try:
        with ExitStack() as stack:
            procs = start_stack(stack, url, args.port, args.concurrency, args.workers)
            client = stack.enter_context(httpx.Client(base_url=f"http://127.0.0.1:{args.port}", timeout=120,
                                                      headers={"Authorization": f"Bearer {TOKEN}"}))
            limit_queue(client, kinds)
            submit(client, [{"task": "noop"} for _ in range(200)])  # warm-up
            time.sleep(2)
            before = cpu_snapshot(procs, url)
            results["s1"] = s1(client, url, args.jobs, keys=args.keys if "keys" in kinds else 0)
            after = cpu_snapshot(procs, url)
            results["s1"]["cpu_us_per_job"] = {k: round((after[k] - before[k]) / args.jobs * 1e6)
                                               for k in before}
            print("gnomon S1", results["s1"], flush=True)
            if not args.skip_s2:
                results["s2"] = s2(client, url)
                print("gnomon S2", results["s2"], flush=True)
            if args.rss_jobs:
                results["rss"] = rss_run(client, url, procs[2:], args.rss_jobs)
                print("gnomon RSS", results["rss"], flush=True)
    finally:
        drop_database(name)
    return results


def print_peers(records: list[dict]) -> None:
    for rec in records:
        if rec.get("scenario") == "S1":
            print(f"peer S1 {rec['peer']}: enqueue {rec['enqueue_rate']}/s, end-to-end {rec['e2e_rate']}/s",
                  flush=True)
        else:
            print(f"peer S2 {rec['peer']}: spread {rec.get('spread')}, burst {rec.get('burst')}", flush=True)


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--peers", nargs="*", default=[])
    parser.add_argument("--rounds", type=int, default=1,
                        help="gnomon, then the peers, this many times in turn (each round's ratio is printed)")
    parser.add_argument("--rss-jobs", type=int, default=0)
    parser.add_argument("--skip-s2", action="store_true")
    parser.add_argument("--limits", nargs="?", const=",".join(LIMITS), default="",
                        help="flow control configured, not binding (issue 7): any of keys,running,rate (default all)")
    parser.add_argument("--keys", type=int, default=64, help="concurrency keys of the S1 jobs with --limits")
    args = parser.parse_args()
    kinds = {kind for kind in args.limits.split(",") if kind}
    if kinds - set(LIMITS):
        parser.error(f"--limits takes {','.join(LIMITS)}")
    rounds = []
    for number in range(1, args.rounds + 1):
        print(f"round {number}: load average {load_average()}", flush=True)
        results = gnomon_round(args, kinds)
        records = peers(args.peers)
        print_peers(records)
        print(json.dumps(results), flush=True)
        rates = {rec["peer"]: rec["e2e_rate"] for rec in records if rec.get("scenario") == "S1"}
        fastest = max(rates.items(), key=lambda item: item[1], default=None)
        rounds.append((results["s1"]["e2e_rate"], fastest, load_average()))
    if args.peers:
        print("\nround  gnomon jobs/s  fastest peer (jobs/s)  ratio  load average after")
        for number, (rate, fastest, load) in enumerate(rounds, 1):
            ratio = f"{rate / fastest[1]:.2f}x" if fastest else "-"
            peer = f"{fastest[0]} {fastest[1]}" if fastest else "-"
            print(f"{number:>5}  {rate:>13}  {peer:>21}  {ratio:>5}  {load}")


if __name__ == "__main__":
    main()
